"""Migrations: `upgrade head` makes the models' schema; a database not at head stops `serve`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from bot import cli
from bot.runtime import Runtime
from bot.schema import metadata
from memory.tables import NAMING_CONVENTION
from swarm.store import migrate
from swarm.store.db import Database
from swarm.store.models import Base
from tests.conftest import make_settings


def differences(conn: Connection) -> list[Any]:
    """What autogenerate would write to make the database the models' (empty: the same)."""
    ours = {t for m in metadata() for t in m.tables}
    context = MigrationContext.configure(conn, opts={
        "include_name": lambda name, type_, _parents: type_ != "table" or name in ours})
    return list(compare_metadata(context, metadata()))


def test_upgrade_head_on_an_empty_database_gives_the_models_schema(db_url: str) -> None:
    db = Database.connect(db_url)
    try:
        done = migrate.upgrade(db)
        assert (done.before, done.after) == (None, migrate.head())
        with db.engine.connect() as conn:
            assert differences(conn) == []
            # the comparison sees what a revision would miss: an index, a column
            conn.execute(text("drop index ix_objectives_thread"))
            conn.execute(text("alter table notes add column extra integer"))
            found = {(d[0], getattr(d[1], "name", None)) for d in differences(conn)}
            conn.rollback()
        assert ("add_index", "ix_objectives_thread") in found
        assert any(kind == "remove_column" for kind, _ in found)
    finally:
        db.close()


def test_every_constraint_of_ours_has_a_name_from_one_convention() -> None:
    assert dict(Base.metadata.naming_convention) == NAMING_CONVENTION
    unnamed = [(t.name, type(c).__name__) for m in metadata() for t in m.tables.values()
               for c in t.constraints if c.name is None]
    assert unnamed == []


def test_upgrading_again_changes_nothing_and_check_passes(db_url: str) -> None:
    db = Database.connect(db_url)
    try:
        migrate.upgrade(db)
        again = migrate.upgrade(db)
        assert again.before == again.after == migrate.head()
        migrate.check(db)
    finally:
        db.close()


def _at(db: Database, revision: str) -> None:
    with db.migrating() as conn:
        command.upgrade(migrate.config(conn), revision)


def test_serve_refuses_an_unmigrated_an_older_and_a_newer_database(tmp_path: Path,
                                                                   db_url: str) -> None:
    settings = make_settings(tmp_path, db_url)
    with pytest.raises(migrate.SchemaNotCurrent, match="has no tables yet: run `threadswarm "
                                                       "migrate`"):
        Runtime(settings)
    db = Database.connect(db_url)
    try:
        _at(db, "0001")
        with pytest.raises(migrate.SchemaNotCurrent,
                           match=f"is at schema revision 0001; this threadswarm needs "
                                 f"{migrate.head()}: run `threadswarm migrate`"):
            Runtime(settings)
        migrate.upgrade(db)
        migrate.check(db)  # at head: it would start
        with db.migrating() as conn:  # a newer threadswarm migrated it
            conn.execute(text("update alembic_version set version_num = 'f00d'"))
        with pytest.raises(migrate.SchemaNotCurrent, match="at schema revision f00d, which "
                                                           "this threadswarm does not know"):
            Runtime(settings)
        with pytest.raises(migrate.SchemaNotCurrent, match="never downgrades"):
            migrate.upgrade(db)
    finally:
        db.close()


def _made_before_migrations(url: str, revision: str) -> None:
    """A database as `create_all` made it before migrations: that revision's tables, no
    alembic_version."""
    db = Database.connect(url)
    try:
        _at(db, revision)
        with db.migrating() as conn:
            conn.execute(text("drop table alembic_version"))
    finally:
        db.close()


@pytest.mark.parametrize("revision", ["0001", "0002"], ids=["memory-off", "memory-on"])
def test_migrate_adopts_a_database_made_before_migrations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        revision: str) -> None:
    url = f"sqlite:///{tmp_path / 'threadswarm.db'}"
    _made_before_migrations(url, revision)
    monkeypatch.setenv("THREADSWARM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(migrate.SchemaNotCurrent, match="made before threadswarm had "
                                                       "migrations: run `threadswarm migrate`"):
        Runtime(make_settings(tmp_path, url))
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert f"its tables are those of revision {revision}, so it is stamped there" in out
    db = Database.connect(url)
    try:
        migrate.check(db)
        with db.engine.connect() as conn:
            assert differences(conn) == []
    finally:
        db.close()


def test_migrate_refuses_to_adopt_a_database_whose_tables_match_no_revision(
        sqlite_url: str) -> None:
    _made_before_migrations(sqlite_url, "0002")
    db = Database.connect(sqlite_url)
    try:
        with db.migrating() as conn:
            conn.execute(text("alter table notes drop column author"))
        with pytest.raises(migrate.SchemaNotCurrent, match=r"match no revision \(missing or "
                                                           r"different: notes\)"):
            migrate.upgrade(db)
        with db.engine.connect() as conn:  # nothing was stamped or created
            assert migrate.current(conn) is None
    finally:
        db.close()


def test_the_console_migrates_its_sqlite_file_by_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'threadswarm.db'}"
    db = Database.connect(url)
    try:
        _at(db, "0001")  # an older threadswarm's database
    finally:
        db.close()
    monkeypatch.setenv("THREADSWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("THREADSWARM_MEMORY_ENABLED", "false")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["status"])
    assert exited.value.code == 0 and "No objectives yet" in capsys.readouterr().out
    db = Database.connect(url)
    try:
        migrate.check(db)
    finally:
        db.close()
