"""PostgreSQL LISTEN/NOTIFY for the outbox: a row written in one process wakes every dispatcher.

In one process a commit wakes the dispatcher at once (Database.on_commit). Across processes
(a second web replica, a worker writing a step's events) PostgreSQL tells the others: `emit`
runs `pg_notify` in the transaction that inserts the rows, so the notification is sent when,
and only if, that transaction commits. Each dispatcher keeps one listening connection. Waking
is only a hint: the dispatcher still claims rows with its lease and still polls, so a
notification lost with a dropped connection, or SQLite (no NOTIFY), costs a poll interval,
never a message.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
CHANNEL = "threadswarm_outbox"  # one per database: every schema's dispatchers hear it (harmless)
RECONNECT_S = 1.0  # after a lost connection; the poll delivers meanwhile


def notify(tx: Session | Connection, platform: str) -> None:
    """Tell the listeners, on commit, that `platform` has new outbox rows (PostgreSQL only;
    PostgreSQL folds identical notifications of one transaction into one)."""
    dialect = tx.dialect if isinstance(tx, Connection) else tx.get_bind().dialect
    if dialect.name == "postgresql":
        tx.execute(select(func.pg_notify(CHANNEL, platform)))


def conninfo(engine: Engine) -> str:
    """The engine's database as a libpq URL for psycopg (SQLAlchemy's driver name dropped)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(engine: Engine, wake: Callable[[], None], name: str,
                 listening: asyncio.Event | None = None) -> None:
    """Call `wake` for every notification, until cancelled; reconnect when the connection is
    lost. `wake` is also called on each (re)connect: rows may have come while nobody listened.
    `name` is the connection's application_name (pg_stat_activity shows whose it is);
    `listening` is set while LISTEN is in force."""
    import psycopg  # the PostgreSQL driver; only a PostgreSQL database gets here

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    conninfo(engine), autocommit=True, application_name=name[:63]) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if listening is not None:
                    listening.set()
                wake()
                async for _ in conn.notifies():
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a restart or failover of the server: poll until it is back
            log.warning("outbox.listen_lost error=%s retry_in_s=%.0f", type(exc).__name__,
                        RECONNECT_S)
        finally:
            if listening is not None:
                listening.clear()
        await asyncio.sleep(RECONNECT_S)
