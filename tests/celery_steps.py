"""A swarm whose steps run as Celery tasks on the local RabbitMQ, for the engine suite."""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from celery.contrib.testing.worker import start_worker
from kombu import Connection

from swarm.config import Settings
from swarm.engine.queue import CeleryExecutor, celery_app, serve_steps
from swarm.services.objectives import Swarm
from swarm.store.db import Database
from tests.conftest import migrated


def require_broker(url: str) -> None:
    """Skipped without a broker; under CI a broker that does not answer is a failure."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Celery broker at {url} does not answer under CI: {exc}")
        pytest.skip(f"the Celery broker at {url} does not answer: {type(exc).__name__}")


def delete_queue(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=2) as conn:
        conn.default_channel.queue_delete(queue)


@asynccontextmanager
async def celery_swarm(settings: Settings, db_url: str) -> AsyncIterator[Swarm]:
    """The driving swarm, with a Celery worker beside it: Celery's worker thread (a thread
    pool, as `threadswarm worker` runs it) hands each task to a swarm of its own on this loop,
    with its own database connections. They meet only through the broker and the database, on
    a queue of this test's own. Settings are shared, so a test that changes one changes both."""
    require_broker(settings.celery_broker_url)
    settings.executor, settings.celery_queue = "celery", f"threadswarm-test-{uuid.uuid4().hex[:8]}"
    app = celery_app(settings.celery_broker_url, settings.celery_queue)
    worker_db, db = migrated(db_url), Database.connect(db_url)
    steps = Swarm(settings, worker_db)
    steps.engine.driving, steps.engine.runner.check_claims = False, True
    serve_steps(app, steps.engine.runner, asyncio.get_running_loop())
    driver = Swarm(settings, db, executor=CeleryExecutor(app, db))
    # entered and left in a thread: a task blocks the worker on this loop, which must run on
    worker = start_worker(app, concurrency=4, pool="threads", perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=30,
                          without_heartbeat=False)  # with it off, its thread never exits
    await asyncio.to_thread(worker.__enter__)
    try:
        yield driver
    finally:
        await driver.shutdown()
        await asyncio.to_thread(worker.__exit__, None, None, None)
        await steps.shutdown()
        db.close()
        worker_db.close()
        await asyncio.to_thread(delete_queue, settings.celery_broker_url, settings.celery_queue)
