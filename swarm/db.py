"""The database: engine, sessions, and transactions that wake listeners after commit."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from swarm.models import Base


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL + NORMAL: a commit is durable against a process crash and costs no fsync.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """Owns the engine; `tx()` is the one way state is written."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._after_commit: list[Callable[[], None]] = []
        self._hot = threading.local()  # core()'s connection, one per thread, kept
        self._kept: list[Connection] = []

    @classmethod
    def connect(cls, url: str) -> Database:
        db = cls(make_engine(url))
        Base.metadata.create_all(db.engine)
        return db

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every committed transaction (wakes the dispatcher, engine)."""
        self._after_commit.append(callback)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session
        for callback in self._after_commit:
            callback()

    @contextmanager
    def core(self) -> Iterator[Connection]:
        """A transaction on a bare connection, for the hot path's prebuilt Core statements: a
        step's claim and finish cost a fraction of an ORM session's unit of work. The connection
        is kept (a pool check-out and its reset cost more than a short transaction)."""
        conn: Connection | None = getattr(self._hot, "conn", None)
        if conn is None or conn.closed:
            conn = self._hot.conn = self.engine.connect()
            self._kept.append(conn)
        with conn.begin():
            yield conn
        for callback in self._after_commit:
            callback()

    def read(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        for conn in self._kept:
            conn.close()
        self._kept.clear()
        self.engine.dispose()
