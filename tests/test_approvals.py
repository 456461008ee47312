"""Approvals bind to what they showed: a stale, repeated, expired or unauthorised decision is
refused and changes nothing; a plan rejected with a reason is replanned from that reason."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from swarm.services.objectives import Swarm
from swarm.store.models import Approval, AuditEntry, Objective, OutboxEvent, Step
from tests.fakes.openai_server import FakeOpenAI
from tests.scenarios import THREAD, approve_all
from tests.test_spend import over_fake

GOAL = "Launch a localized campaign for our SaaS in Japan"
FEEDBACK = "Skip the rollout step, we ship by hand"


def snapshot(swarm: Swarm) -> list[Any]:
    """Everything a decision could change, but the audit log (refusals are on the record)."""
    with swarm.db.read() as s:
        return [[tuple(getattr(row, c.key) for c in model.__table__.columns)  # type: ignore
                 for row in s.scalars(select(model).order_by(model.id))]  # type: ignore
                for model in (Objective, Step, Approval, OutboxEvent)]


def audited(swarm: Swarm, action: str) -> list[AuditEntry]:
    with swarm.db.read() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


async def proposed(swarm: Swarm) -> tuple[int, Approval]:
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    [plan] = swarm.pending_approvals(started.objective_id)
    return started.objective_id, plan


async def test_a_non_approver_a_second_decision_and_a_stale_plan_change_nothing(
        swarm: Swarm) -> None:
    oid, plan = await proposed(swarm)
    before = snapshot(swarm)
    refused = await swarm.decide(plan.id, "mallory", True)
    assert not refused.ok and refused.message.startswith("Only the requester, an approver")
    assert snapshot(swarm) == before and len(audited(swarm, "approval.refused")) == 1

    assert (await swarm.decide(plan.id, "alice", False, FEEDBACK)).ok  # replanned: v2
    await swarm.join()
    [v2] = swarm.pending_approvals(oid)
    assert v2.binding == "plan:v2" and v2.id != plan.id
    before = snapshot(swarm)
    stale = await swarm.decide(plan.id, "alice", True)  # a click on v1's buttons
    assert not stale.ok and stale.message.startswith("That plan was replaced by plan v2")
    assert snapshot(swarm) == before and audited(swarm, "approval.stale")

    assert (await swarm.decide(v2.id, "alice", True)).ok
    before = snapshot(swarm)
    again = await swarm.decide(v2.id, "alice", False)
    assert not again.ok and again.message == "Already approved by alice."
    assert snapshot(swarm) == before


async def test_an_expired_approval_is_refused(make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(approval_ttl_hours=0.05 / 3600)  # 50 ms
    oid, plan = await proposed(swarm)
    await asyncio.sleep(0.1)
    before = snapshot(swarm)
    expired = await swarm.decide(plan.id, "alice", True)
    assert not expired.ok and "expired" in expired.message
    assert snapshot(swarm) == before and swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]


async def test_a_plan_rejected_with_feedback_is_replanned_from_it(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    swarm = make_swarm(**over_fake(openai_server, max_plan_rejections=1))
    oid, plan = await proposed(swarm)
    decided = await swarm.decide(plan.id, "alice", False, FEEDBACK)
    assert decided.ok
    await swarm.join()
    plans = [r for r in openai_server.requests() if r.schema == "PlanSpec"]
    assert len(plans) == 2 and FEEDBACK not in plans[0].text
    assert f"FEEDBACK ON THE REJECTED PLAN: {FEEDBACK}" in plans[1].text
    view = swarm.view(oid)
    assert view is not None and view.state == "awaiting_approval"
    [v2] = swarm.pending_approvals(oid)
    assert v2.title.startswith("Plan v2")
    with swarm.db.read() as s:
        rationale = s.scalars(select(OutboxEvent.payload).where(
            OutboxEvent.kind == "PlanProposed").order_by(OutboxEvent.id)).all()[-1]["rationale"]
    assert FEEDBACK in rationale  # the new plan answers the feedback
    [entry] = audited(swarm, "plan.replan_requested")
    assert entry.actor == "alice" and entry.detail["feedback"] == FEEDBACK
    # bounded: past max_plan_rejections a rejection ends the objective
    assert (await swarm.decide(v2.id, "alice", False, "still no")).ok
    await swarm.join()
    assert swarm.view(oid).state == "cancelled"  # type: ignore[union-attr]
    assert len([r for r in openai_server.requests() if r.schema == "PlanSpec"]) == 2


async def test_a_rejection_without_a_reason_still_cancels(swarm: Swarm) -> None:
    oid, plan = await proposed(swarm)
    assert (await swarm.decide(plan.id, "alice", False)).ok
    assert swarm.view(oid).state == "cancelled"  # type: ignore[union-attr]
    view = await approve_all(swarm, oid)
    assert view.state == "cancelled"


async def test_at_the_console_a_rejected_plan_asks_why_and_replans(swarm: Swarm) -> None:
    from io import StringIO

    from rich.console import Console

    from bot.console.adapter import ConsoleAdapter

    answers = iter(["n", FEEDBACK])
    out = StringIO()
    adapter = ConsoleAdapter(swarm, Console(file=out), user="alice",
                             prompt=lambda question: next(answers))
    oid, plan = await proposed(swarm)
    await adapter.decide(plan.id, "plan v1")
    await swarm.join()
    [v2] = swarm.pending_approvals(oid)
    assert v2.binding == "plan:v2" and "Rejected by alice." in out.getvalue()
