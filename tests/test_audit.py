"""The audit log's hash chain shows an edited, removed or truncated entry."""
from __future__ import annotations

from sqlalchemy import delete, select, update

from swarm.services.objectives import Swarm
from swarm.store.audit import verify_chain
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
