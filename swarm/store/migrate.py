"""Migrations: bring a database to this code's schema, and refuse to run on one that is not.

`threadswarm migrate` upgrades (and adopts a database made before migrations existed, when its
tables are exactly those of a revision); `serve` and `worker` call `check` and stop with its
message; the console's commands on SQLite upgrade by themselves. The revisions live in
./migrations beside this module, so an installed wheel carries them.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, create_engine, inspect, text

from swarm.store.db import Database

SCRIPTS = Path(__file__).with_name("migrations")
_PG_LOCK = 0x7473_6D67  # pg_advisory_xact_lock's key: two migrators take turns


class SchemaNotCurrent(RuntimeError):
    """The database is not at this code's revision; the message says what to do."""


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: no revision (an empty database, or one made before migrations)
    after: str
    adopted: str | None = None  # the revision a database made before migrations matched


def config(connection: Connection | None = None,
           metadata: Iterable[MetaData] | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the scripts, and what env.py is handed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = None if metadata is None else list(metadata)
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    found = scripts().get_current_head()
    assert found is not None, "no revisions in " + str(SCRIPTS)
    return found


def current(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads[0] if heads else None


def check(db: Database) -> None:
    """Raise SchemaNotCurrent unless the database is at this code's revision."""
    with db.engine.connect() as conn:
        now = current(conn)
        if now == head():
            return
        legacy = now is None and _ours(conn)
    raise SchemaNotCurrent(_problem(db, now, legacy))


def upgrade(db: Database) -> Upgrade:
    """Upgrade to this code's revision, in one write transaction (two migrators take turns).
    A database made before migrations is first stamped at the revision its tables match."""
    with db.migrating() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("select pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        before = current(conn)
        if before is not None and not _known(before):
            raise SchemaNotCurrent(_problem(db, before, False))
        adopted = _adopt(conn) if before is None and _ours(conn) else None
        command.upgrade(config(conn), "head")
    return Upgrade(before, head(), adopted)


def _adopt(conn: Connection) -> str:
    """The last revision whose tables and columns a database made by `create_all` (before
    migrations) has exactly: it is stamped there, and upgraded from there."""
    theirs = _columns(conn)
    matched, first = None, None
    scratch = create_engine("sqlite://")  # each revision in turn, on an empty database
    try:
        with scratch.begin() as ref:
            for script in reversed(list(scripts().walk_revisions())):
                command.upgrade(config(ref), script.revision)
                at = _columns(ref)
                first = first or at
                if {t: c for t, c in theirs.items() if t in at} == at:
                    matched = script.revision
    finally:
        scratch.dispose()
    if matched is None:
        differ = sorted(t for t, columns in (first or {}).items() if theirs.get(t) != columns)
        raise SchemaNotCurrent(
            "This database was made before threadswarm had migrations, and its tables match no "
            f"revision (missing or different: {', '.join(differ)}). Back it up, then start on a "
            "new database (move the SQLite file aside, or set DATABASE_URL).")
    MigrationContext.configure(conn).stamp(scripts(), matched)
    return matched


def _columns(conn: Connection) -> dict[str, set[str]]:
    found = inspect(conn)
    return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()
            if t != "alembic_version"}


def _ours(conn: Connection) -> bool:
    """Tables of ours without a revision: made by `create_all`, before migrations."""
    return "objectives" in inspect(conn).get_table_names()


def _known(revision: str) -> bool:
    try:
        return scripts().get_revision(revision) is not None
    except Exception:  # alembic: "No such revision"
        return False


def _problem(db: Database, now: str | None, legacy: bool) -> str:
    where = f"The database {db.engine.url.render_as_string(hide_password=True)}"
    if now is None and legacy:
        return (f"{where} was made before threadswarm had migrations: run `threadswarm migrate` "
                f"to adopt it (back it up first).")
    if now is None:
        return f"{where} has no tables yet: run `threadswarm migrate` to create them."
    if _known(now):
        return (f"{where} is at schema revision {now}; this threadswarm needs {head()}: run "
                f"`threadswarm migrate` (back it up first).")
    return (f"{where} is at schema revision {now}, which this threadswarm does not know (its "
            f"newest is {head()}): a newer threadswarm migrated it. Run that version; "
            f"`threadswarm migrate` never downgrades.")
