"""The migration environment: every table of ours, migrated on the connection it is handed.

`threadswarm migrate` (swarm.store.migrate) hands over a connection already in its write
transaction; the `alembic` command (alembic.ini at the repository's root, for developers) gets
one from `sqlalchemy.url` or the settings. Autogenerate compares the tables of the metadata it is
given (the ini's `target_metadata` names bot.schema's, the composition of swarm, schedules and
memory) and nothing else: slack_sdk's installation store and APScheduler's job store are
created by their own code. Batch mode always, so a revision that alters a table runs on SQLite
(which recreates the table) as on PostgreSQL.
"""
from __future__ import annotations

import importlib
from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData

config = context.config


def target_metadata() -> list[MetaData] | None:
    given = config.attributes.get("target_metadata")
    if given is None and (name := config.get_main_option("target_metadata")):
        module, _, attr = name.partition(":")
        given = getattr(importlib.import_module(module), attr)()
    return None if given is None else list(given)


def run(connection: Connection) -> None:
    metadata = target_metadata()
    ours = {t for m in metadata or () for t in m.tables}

    def include_name(name: str | None, type_: str, parents: Any) -> bool:
        return type_ != "table" or name in ours

    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      include_name=include_name if metadata else None)
    with context.begin_transaction():
        context.run_migrations()


def url() -> str:
    if found := config.get_main_option("sqlalchemy.url"):
        return found
    from swarm.config import Settings

    return Settings().url


if context.is_offline_mode():
    context.configure(url=url(), target_metadata=target_metadata(), render_as_batch=True,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run(given)
else:
    from swarm.store.db import Database, make_engine

    db = Database(make_engine(url()))
    try:
        with db.migrating() as connection:
            run(connection)
    finally:
        db.close()
