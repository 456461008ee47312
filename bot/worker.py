"""`threadswarm worker`: runs the step runs sent over Celery (THREADSWARM_EXECUTOR=celery).

A worker builds its swarm once per process, from the same settings and database as `serve`, on
an event loop of its own that lives as long as the process (the runner's heartbeat, its batched
writes and the LLM client stay on it); Celery's threads hand each task to that loop. It drives
no objective: the web processes decide what is ready, a worker only runs what it is sent.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket

from bot.loop_thread import LoopThread
from bot.runtime import Runtime
from swarm.config import Settings

log = logging.getLogger(__name__)
CLOSE_S = 30.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    worker = sub.add_parser("worker", help="run step runs from the Celery broker "
                                           "(CELERY_BROKER_URL) for the web processes")
    worker.add_argument("--concurrency", type=int, default=4,
                        help="step runs at once (each waits on model calls most of the time)")
    worker.set_defaults(func=cmd_worker)


async def _build(settings: Settings) -> Runtime:
    return Runtime(settings, drive=False)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Blocking, not a coroutine: Celery's worker runs in the main thread (its signals)."""
    from swarm.engine.queue import celery_app, serve_steps  # Celery loads only for this command

    steps = LoopThread("steps")
    steps.start()
    runtime = asyncio.run_coroutine_threadsafe(_build(settings), steps.loop).result()
    app = celery_app(settings.celery_broker_url, settings.celery_queue)
    serve_steps(app, runtime.swarm.engine.runner, steps.loop)
    level = "INFO" if getattr(args, "verbose", False) else "WARNING"
    try:
        app.worker_main(["worker", "--pool=threads", f"--concurrency={args.concurrency}",
                         f"--hostname=threadswarm-{os.getpid()}@{socket.gethostname()}",
                         "--without-gossip", "--without-mingle", f"--loglevel={level}"])
    except SystemExit as exited:  # Celery's own exit: the swarm still closes below
        code = exited.code if isinstance(exited.code, int) else 1
    else:
        code = 0
    finally:
        closing = asyncio.run_coroutine_threadsafe(runtime.close(), steps.loop)
        try:
            closing.result(CLOSE_S)
        except Exception as exc:  # logged: the process exits all the same
            log.warning("worker.close_failed error=%s", type(exc).__name__)
        asyncio.run(steps.stop())
    return code
