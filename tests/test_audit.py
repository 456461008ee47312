"""The audit log's hash chain shows an edited, removed or truncated entry."""
from __future__ import annotations

import pytest
from rich.console import Console
from sqlalchemy import delete, select, update

from bot import cli
from swarm.config import Settings
from swarm.services.objectives import Swarm
from swarm.store.audit import _digest, verify_chain
from swarm.store.models import AuditEntry
from tests.scenarios import run_goal


async def _entries(swarm: Swarm) -> list[AuditEntry]:
    await run_goal(swarm, "Write a launch announcement")
    with swarm.db.read() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def test_an_untouched_chain_verifies(swarm: Swarm) -> None:
    entries = await _entries(swarm)
    assert {"objective.created", "plan.proposed", "approval.decided",
            "objective.finished"} <= {e.action for e in entries}
    with swarm.db.read() as s:
        report = verify_chain(s)
    assert report.ok and report.entries == len(entries)


async def test_an_edited_entry_breaks_the_chain_at_that_entry(swarm: Swarm) -> None:
    entries = await _entries(swarm)
    decided = next(e for e in entries if e.action == "approval.decided")
    with swarm.db.tx() as s:
        s.execute(update(AuditEntry).where(AuditEntry.id == decided.id)
                  .values(actor="mallory"))
    with swarm.db.read() as s:
        report = verify_chain(s)
    assert not report.ok and report.first_bad_id == decided.id
    assert report.problem == "this entry was edited"


async def test_a_removed_entry_breaks_the_chain(swarm: Swarm) -> None:
    entries = await _entries(swarm)
    with swarm.db.tx() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id == entries[2].id))
    with swarm.db.read() as s:
        report = verify_chain(s)
    assert not report.ok and report.first_bad_id == entries[3].id


async def test_removing_the_newest_entries_shows(swarm: Swarm) -> None:
    entries = await _entries(swarm)
    with swarm.db.tx() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id == entries[-1].id))
    with swarm.db.read() as s:
        report = verify_chain(s)
    assert not report.ok and "newest" in (report.problem or "")


async def _verify_cli(swarm: Swarm, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`threadswarm audit verify` on the swarm's database, as an operator runs it."""
    monkeypatch.setattr(cli, "console", Console(width=200, force_terminal=False))
    args = cli.build_parser().parse_args(["audit", "verify"])
    capsys.readouterr()
    code = await args.func(args, Settings(database_url=swarm.db.engine.url.render_as_string(
        hide_password=False), memory_enabled=False))
    return code, capsys.readouterr().out


def _swap_ids(swarm: Swarm, a: int, b: int) -> None:
    with swarm.db.tx() as s:
        for old, new in ((a, -1), (b, a), (-1, b)):
            s.execute(update(AuditEntry).where(AuditEntry.id == old).values(id=new))


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "rehash"])
async def test_audit_verify_names_the_first_tampered_entry(
        swarm: Swarm, tamper: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    entries = await _entries(swarm)
    code, text = await _verify_cli(swarm, monkeypatch, capsys)
    assert code == 0 and f"Audit chain intact: {len(entries)} entries" in text
    target = entries[3]
    with swarm.db.tx() as s:
        if tamper == "edit":
            s.execute(update(AuditEntry).where(AuditEntry.id == target.id)
                      .values(detail={**target.detail, "approved": False}))
        elif tamper == "delete":
            s.execute(delete(AuditEntry).where(AuditEntry.id == target.id))
        elif tamper == "rehash":  # edited, its hash recomputed to match the new content
            forged = {**target.detail, "forged": True}
            s.execute(update(AuditEntry).where(AuditEntry.id == target.id).values(
                detail=forged, hash=_digest(target.prev_hash, target.at, target.actor,
                                            target.action, target.objective_id, forged)))
    if tamper == "reorder":
        _swap_ids(swarm, target.id, entries[5].id)
    code, text = await _verify_cli(swarm, monkeypatch, capsys)
    assert code == 1
    named = entries[4].id if tamper == "delete" else target.id
    assert f"Audit chain broken at entry #{named}" in text
    assert {"edit": "this entry was edited", "rehash": "edited and its hash recomputed",
            "delete": f"the entry before it was deleted (#{target.id})",
            "reorder": "this entry was moved"}[tamper] in text
