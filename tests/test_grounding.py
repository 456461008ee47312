"""Grounding checks against drift, offline: the model is told to break a stated constraint after
step 2 (on-topic text, not a tangent), and the check holds the work until the humans decide."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from bot.commands import handle
from schedules.grounding import Grounder
from swarm.events import DriftDetected, PlanProposed
from swarm.services.objectives import Swarm
from swarm.store.models import (
    AuditEntry,
    GroundingCheck,
    LLMCall,
    ObjectiveConstraints,
    Step,
    utcnow,
)
from tests.clocks import clock_for, events, until
from tests.scenarios import THREAD, approve_all

JUDGE_CALLS = select(func.count()).where(LLMCall.tier == "fast", LLMCall.step_id.is_(None))
DRIFTING = "Plan an organic-only launch campaign for our SaaS in Japan [drift-after:2]"


def audit_actions(swarm: Swarm, objective_id: int) -> list[str]:
    with swarm.db.read() as s:
        return list(s.scalars(select(AuditEntry.action).where(
            AuditEntry.objective_id == objective_id).order_by(AuditEntry.id)))


def checks(swarm: Swarm, objective_id: int) -> list[GroundingCheck]:
    with swarm.db.read() as s:
        return list(s.scalars(select(GroundingCheck).where(
            GroundingCheck.objective_id == objective_id).order_by(GroundingCheck.id)))


async def test_the_check_after_k_steps_catches_a_broken_constraint_and_holds_the_rest(
        make_swarm: Callable[..., Swarm], embedder: Any) -> None:
    swarm = make_swarm(grounding_after_steps=3)
    grounder = Grounder(swarm, embedder)
    swarm.engine.checkpoint = grounder.checkpoint
    started = await swarm.start_objective(DRIFTING, THREAD, "alice", "evt-1")
    await swarm.join()
    [(_, plan)] = events(swarm, "PlanProposed")
    assert isinstance(plan, PlanProposed)  # the constraints are shown with the plan
    assert plan.constraints == ["market: Japan", "must: organic-only"]
    [approval] = swarm.pending_approvals(started.objective_id)
    assert (await swarm.decide(approval.id, "alice", True)).ok
    await swarm.join()

    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused"
    states = {st.key: st.state for st in view.steps}
    assert states == {"s1": "finished", "s2": "finished", "s3": "finished", "s4": "pending",
                      "s5": "pending"}  # held before they started
    [check] = checks(swarm, started.objective_id)  # caught within one check
    assert check.signal == "judge" and not check.aligned  # on-topic: the pre-filter passed it
    [(_, notice)] = events(swarm, "DriftDetected")
    assert isinstance(notice, DriftDetected)
    [violated] = notice.violated
    assert violated.constraint == "must: organic-only" and "paid search" in violated.evidence
    assert notice.held == ["Review risks and compliance", "Prepare the rollout"]
    assert "organic-only" in notice.correction
    assert "drift.detected" in audit_actions(swarm, started.objective_id)

    [drift] = swarm.pending_approvals(started.objective_id)
    assert drift.kind == "drift" and drift.id == notice.approval_id
    assert (await swarm.decide(drift.id, "alice", True)).ok  # apply the correction
    view = await approve_all(swarm, started.objective_id)
    assert view.state == "finished"
    with swarm.db.read() as s:
        corrected = dict(s.execute(select(Step.key, Step.instructions).where(
            Step.objective_id == view.id)).all())
    assert all("Correction from the grounding check" in corrected[k] for k in ("s4", "s5"))
    assert "Correction" not in corrected["s3"]
    outputs = {st.key: st.output or "" for st in view.steps}
    assert "paid" not in outputs["s4"] + outputs["s5"]  # the corrected steps keep to it
    actions = audit_actions(swarm, view.id)
    assert actions.count("grounding.checked") == 1 and "approval.decided" in actions


async def test_the_scheduled_check_catches_drift_while_a_step_waits_for_the_humans(
        make_swarm: Callable[..., Swarm]) -> None:
    # no checkpoints: only the clock's periodic check can see it
    swarm = make_swarm(grounding_after_steps=0, grounding_every=timedelta(seconds=0.2))
    goal = "Plan an organic-only launch for our SaaS in Japan: ask us? [drift-after:0]"
    started = await swarm.start_objective(goal, THREAD, "alice", "evt-1")
    await swarm.join()
    assert (await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id, "alice",
                               True)).ok
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "running"  # s2 waits for an answer
    clock = clock_for(swarm)
    clock.start()
    try:
        await until(lambda: events(swarm, "DriftDetected"), what="the drift notice")
    finally:
        clock.shutdown()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused"
    [check] = [c for c in checks(swarm, view.id) if not c.aligned]
    assert check.trigger == "schedule"
    [drift] = swarm.pending_approvals(view.id)
    assert (await swarm.decide(drift.id, "alice", False, "paid is fine this once")).ok
    view = swarm.view(view.id)
    assert view is not None and view.state == "running"  # continued as planned
    assert await swarm.reply(THREAD, "alice", "Budget: $2,000.")
    assert (await approve_all(swarm, view.id)).state == "finished"


async def test_the_pre_filter_catches_a_blatant_tangent_without_a_model_call(
        make_swarm: Callable[..., Swarm], embedder: Any) -> None:
    swarm = make_swarm(grounding_after_steps=0, approvers=["admin"])
    Grounder(swarm, embedder)  # the swarm's grounder, as the runtime makes it
    started = await swarm.start_objective("Launch a localized campaign for our SaaS in Japan",
                                          THREAD, "alice", "evt-1")
    await swarm.join()
    assert (await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id, "alice",
                               True)).ok
    await swarm.join()  # s5 waits for its approval; s1-s4 are done
    on_track = await handle(swarm, "alice", THREAD.team_id, f"ground {started.objective_id}")
    assert "is on track" in on_track.text
    nothing = await handle(swarm, "alice", THREAD.team_id, f"ground {started.objective_id}")
    assert "no new output" in nothing.text
    with swarm.db.tx() as s:  # a worker wandered off completely
        s.execute(update(Step).where(Step.objective_id == started.objective_id, Step.key == "s4")
                  .values(output="Preheat the oven to 180C. Cream the butter and sugar, fold "
                                 "in the flour and bake the sponge for 25 minutes.",
                          finished_at=utcnow()))
    await swarm.calls.drain()  # the first check's judge call is booked
    with swarm.db.read() as s:
        judged = s.scalar(JUDGE_CALLS)
    refused = await handle(swarm, "mallory", THREAD.team_id, f"ground {started.objective_id}")
    assert refused.text.startswith("Only the requester")
    drifted = await handle(swarm, "admin", THREAD.team_id, f"ground {started.objective_id}")
    assert "drifted" in drifted.text and "prefilter" in drifted.text
    await swarm.calls.drain()
    with swarm.db.read() as s:
        assert s.scalar(JUDGE_CALLS) == judged == 1  # the first check's, none since
    [(_, notice)] = events(swarm, "DriftDetected")
    assert isinstance(notice, DriftDetected) and notice.signal == "prefilter"
    assert "Review risks and compliance" in notice.drifted


async def test_a_team_has_no_checks_of_its_own_its_parents_checks_cover_the_tree(
        make_swarm: Callable[..., Swarm], embedder: Any) -> None:
    swarm = make_swarm(grounding_after_steps=1)  # a checkpoint after every finished step
    grounder = Grounder(swarm, embedder)
    swarm.engine.checkpoint = grounder.checkpoint
    started = await swarm.start_objective(
        "Plan an organic-only launch for our SaaS in Japan [team]", THREAD, "alice", "evt-1")
    view = await approve_all(swarm, started.objective_id)
    assert view.state == "finished"
    [team] = view.teams.values()
    assert team.state == "finished" and len(team.steps) > 1
    assert checks(swarm, view.id) and checks(swarm, team.id) == []
    with swarm.db.read() as s:
        kept = dict(s.execute(select(ObjectiveConstraints.objective_id,
                                     ObjectiveConstraints.data)).all())
    assert set(kept) == {view.id} and "organic-only" in str(kept[view.id])
    asked = await handle(swarm, "alice", THREAD.team_id, f"ground {team.id}")
    assert f"is a team of objective #{view.id}" in asked.text
    assert checks(swarm, team.id) == []
