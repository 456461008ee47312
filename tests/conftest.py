"""Shared fixtures: databases (SQLite always, PostgreSQL when it answers) and a swarm."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# litellm's own backoff knobs (read once, at import): its real retry code, with short waits. A
# Retry-After header is still honoured to the second; only the jitter added to it shrinks.
os.environ.setdefault("INITIAL_RETRY_DELAY", "0.05")
os.environ.setdefault("JITTER", "0.05")

from swarm.config import Settings  # noqa: E402
from swarm.services.objectives import Swarm  # noqa: E402
from swarm.store import migrate  # noqa: E402
from swarm.store.db import Database  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.fakes.slack_api import FakeSlackAPI  # noqa: E402

if TYPE_CHECKING:
    from tests.fakes.slack_bot import Bot

PG_URL = os.environ.get("THREADSWARM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_schema_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL; skipped without a server, failed under CI."""
    try:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} does not answer under CI: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer: {type(exc).__name__}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f"create schema {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Store and engine tests run on both databases."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'threadswarm.db'}"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'threadswarm.db'}"


def migrated(url: str) -> Database:
    """A database at this code's schema revision, as `threadswarm migrate` leaves it (a second
    process's on the same url: already there, nothing is done)."""
    db = Database.connect(url)
    migrate.upgrade(db)
    return db


def make_settings(tmp_path, url: str, **overrides: object) -> Settings:  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"data_dir": tmp_path, "database_url": url,
                                 "offline_latency_ms": 20.0, "memory_enabled": False}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def executor() -> str:
    """Where the `swarm` fixture's steps run; tests/test_engine.py runs on both executors."""
    return "inprocess"


@pytest.fixture
async def swarm(tmp_path, db_url: str, executor: str) -> AsyncIterator[Swarm]:  # type: ignore[no-untyped-def]
    if executor == "celery":
        from tests.celery_steps import celery_swarm

        async with celery_swarm(make_settings(tmp_path, db_url), db_url) as sw:
            yield sw
        return
    db = migrated(db_url)
    sw = Swarm(make_settings(tmp_path, db_url), db)
    yield sw
    await sw.shutdown()
    db.close()


@pytest.fixture
async def openai_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    """A local OpenAI-compatible server; litellm reaches it through THREADSWARM_MODEL_API_BASES."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    server = await FakeOpenAI().start()
    yield server
    await server.close()


@pytest.fixture
async def make_swarm(tmp_path, db_url: str) -> AsyncIterator[Callable[..., Swarm]]:  # type: ignore[no-untyped-def]
    """Swarms on the test database with settings overridden per test."""
    db = migrated(db_url)
    made: list[Swarm] = []

    def build(**overrides: object) -> Swarm:
        made.append(Swarm(make_settings(tmp_path, db_url, **overrides), db))
        return made[-1]

    yield build
    for sw in made:
        await sw.shutdown()
    db.close()


@pytest.fixture
async def api() -> AsyncIterator[FakeSlackAPI]:
    """A local Slack Web API that records what the bot sends."""
    fake = await FakeSlackAPI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(tmp_path, sqlite_url: str, api: FakeSlackAPI) -> AsyncIterator[Bot]:  # type: ignore[no-untyped-def]
    """The bot as `threadswarm serve` runs it, against the local Slack."""
    from tests.fakes.slack_bot import start_bot  # it builds on make_settings, above

    running = await start_bot(tmp_path, sqlite_url, api)
    yield running
    await running.close()


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 embedder team memory uses (offline), loaded once."""
    from memory import Embedder

    return Embedder()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Celery executor runs the engine suite on PostgreSQL, the database it is deployed
    with (on SQLite it passes too, at twice the suite's time)."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        chosen = params.params if params is not None else {}
        (drop if chosen.get("executor") == "celery" and chosen.get("db_url") == "sqlite"
         else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
