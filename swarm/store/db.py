"""The database: engine, sessions, write transactions, and retries of brief operational errors.

SQLite: pysqlite opens its transaction late (at the first write) and SQLite ignores
`FOR UPDATE`, so two processes could both read a row and then both write what they decided
from it. Write transactions therefore start with `BEGIN IMMEDIATE` (SQLAlchemy's documented
pysqlite recipe: the driver's own transaction handling off, SQLAlchemy emits BEGIN), which
takes the write lock first; reads keep a plain deferred `BEGIN`. The hot path's
`UPDATE ... RETURNING` needs SQLite 3.35 or newer (Python 3.11's sqlite3 has it nearly
everywhere; `sqlite3.sqlite_version` tells).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
_WRITE = "threadswarm_write"  # execution option: this transaction writes (BEGIN IMMEDIATE)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            # WAL + NORMAL: a commit is durable against a process crash and costs no fsync.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE)
                                 else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def is_transient(exc: BaseException) -> bool:
    """A brief database problem that the same statements may get past: a dropped connection,
    a failover, SQLite's "database is locked". Constraint violations and bugs are not."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


class Database:
    """Owns the engine; `tx()` and `core()` are the ways state is written."""

    def __init__(self, engine: Engine, *, retries: int = 5, retry_base_s: float = 0.05) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._writer = engine.execution_options(**{_WRITE: True})
        self._writes = sessionmaker(self._writer, expire_on_commit=False)
        self.retries, self.retry_base_s = retries, retry_base_s
        self._after_commit: list[Callable[[], None]] = []
        self._hot = threading.local()  # core()'s connection, one per thread, kept
        self._kept: list[Connection] = []

    @classmethod
    def connect(cls, url: str) -> Database:
        """The engine only: the tables are made by migrations (swarm.store.migrate)."""
        return cls(make_engine(url))

    @property
    def sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every committed transaction (wakes the dispatcher, engine)."""
        self._after_commit.append(callback)

    @contextmanager
    def tx(self, *, wake: bool = True) -> Iterator[Session]:
        """A write transaction. Work registered with `after_commit(session, fn)` runs once it
        has committed, never if it rolls back."""
        with self._writes.begin() as session:
            yield session
        for fn in session.info.pop("after_commit", ()):
            fn()
        if wake:
            for callback in self._after_commit:
                callback()

    @contextmanager
    def core(self, *, wake: bool = True) -> Iterator[Connection]:
        """A write transaction on a bare connection, for the hot path's prebuilt Core statements:
        a step's claim and finish cost a fraction of an ORM session's unit of work. The
        connection is kept (a pool check-out and its reset cost more than a short transaction),
        and dropped when the database cut it off, so the next try gets a fresh one."""
        conn: Connection | None = getattr(self._hot, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._hot.conn = self._writer.connect()
            self._kept.append(conn)
        try:
            with conn.begin():
                yield conn
        except DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:
                self._drop(conn)
            raise
        if wake:
            for callback in self._after_commit:
                callback()

    def migrating(self) -> AbstractContextManager[Connection]:
        """A write transaction for DDL (on SQLite `BEGIN IMMEDIATE`: migrators take turns)."""
        return self._writer.begin()

    def _drop(self, conn: Connection) -> None:
        self._hot.conn = None
        if conn in self._kept:
            self._kept.remove(conn)
        try:
            conn.close()
        except Exception:  # it is gone already
            pass

    async def retrying(self, write: Callable[[], T], what: str) -> T:
        """Run `write` (one whole transaction), again with backoff while the database has a
        transient problem; its statements must be safe to run again after a rollback."""
        for attempt in range(self.retries + 1):
            try:
                return write()
            except Exception as exc:
                if not is_transient(exc) or attempt == self.retries:
                    raise
                delay = min(2.0, self.retry_base_s * 2 ** attempt)
                log.warning("db.retrying what=%s attempt=%d error=%s delay_s=%.2f", what,
                            attempt + 1, type(exc).__name__, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def read(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        for conn in self._kept:
            conn.close()
        self._kept.clear()
        self.engine.dispose()


def after_commit(session: Session, fn: Callable[[], Any]) -> None:
    """Run `fn` once the session's transaction has committed (a side effect: cancel a task,
    spawn planning, remember a decision, poke the engine)."""
    session.info.setdefault("after_commit", []).append(fn)

