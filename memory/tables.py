"""SQL tables of team memory, on their own MetaData: the memories and the store's identity."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa

DEFAULT_TABLE = "memory_items"
# The swarm's convention too (memory imports nothing of ours): every constraint has a name that
# a migration can drop or alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


@dataclass(frozen=True)
class MemoryTables:
    """The memory table and its companion `<name>_epoch` table, bound to one MetaData."""

    metadata: sa.MetaData
    items: sa.Table
    epoch: sa.Table


def memory_tables(name: str = DEFAULT_TABLE) -> MemoryTables:
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    # An INTEGER primary key on SQLite (BIGINT elsewhere) so it is the rowid; AUTOINCREMENT so
    # an id is never reused after a forget, since index files hold ids.
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    items = sa.Table(
        name,
        metadata,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("objective_id", sa.BigInteger(), nullable=True),
        sa.Column("author", sa.String(255), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False, default=dict),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_team_kind", "team", "kind"),
        sa.Index(f"ix_{name}_team_objective", "team", "objective_id"),
        sa.Index(f"ix_{name}_team_created", "team", "created_at"),
        sqlite_autoincrement=True,
    )
    # One random value per database: an index file written for another database (same ids,
    # other texts, e.g. after the SQLite file was deleted) is then recognised and rebuilt.
    epoch = sa.Table(
        f"{name}_epoch",
        metadata,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.String(64), nullable=False),
    )
    return MemoryTables(metadata=metadata, items=items, epoch=epoch)


def ensure_schema(engine: sa.Engine, tables: MemoryTables) -> str:
    """Create the tables if missing; return this database's epoch."""
    tables.metadata.create_all(engine)
    select_epoch = sa.select(tables.epoch.c.value).where(tables.epoch.c.id == 1)
    with engine.connect() as conn:
        found = conn.execute(select_epoch).scalar_one_or_none()
    if found is not None:
        return str(found)
    try:
        with engine.begin() as conn:
            conn.execute(tables.epoch.insert().values(id=1, value=uuid.uuid4().hex))
    except sa.exc.IntegrityError:
        pass  # another process created it first; theirs wins
    with engine.connect() as conn:
        return str(conn.execute(select_epoch).scalar_one())
