"""The swarm end to end on the offline model: plans, approvals, DAG runs, critic, humans."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from swarm.services.objectives import Swarm
from swarm.store.models import LLMCall, Objective
from tests.scenarios import THREAD, approve_all, outbox_kinds, run_goal, runs_by_key

GOAL = "Launch a localized campaign for our SaaS in Japan"


@pytest.fixture(params=["inprocess", "celery"])
def executor(request: pytest.FixtureRequest) -> str:
    """The engine suite passes with steps run in the process and as Celery tasks on a worker."""
    return str(request.param)


async def test_a_goal_runs_to_the_end_with_plan_and_step_approval(swarm: Swarm) -> None:
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "awaiting_approval"
    assert [st.state for st in view.steps] == ["pending"] * 5  # nothing runs before approval

    view = await approve_all(swarm, started.objective_id)
    assert view.state == "finished"
    assert all(st.state == "finished" and st.output for st in view.steps)
    kinds = outbox_kinds(swarm, started.objective_id)
    assert kinds[:2] == ["ObjectiveAccepted", "PlanProposed"]
    assert "ApprovalRequested" in kinds  # the risky developer step asked again
    assert kinds[-1] == "ObjectiveFinished"


async def test_independent_steps_overlap_in_time(swarm: Swarm) -> None:
    view = await run_goal(swarm, GOAL)
    runs = runs_by_key(swarm, view.id)
    research, analysis = runs["s1"][0], runs["s2"][0]
    assert research.started_at < analysis.finished_at and analysis.started_at < research.finished_at
    draft = runs["s3"][0]
    assert draft.started_at >= max(research.finished_at, analysis.finished_at)


async def test_a_critic_rejection_sends_the_step_back_for_revision(swarm: Swarm) -> None:
    view = await run_goal(swarm, GOAL)
    draft_runs = runs_by_key(swarm, view.id)["s3"]
    assert [r.state for r in draft_runs] == ["rejected", "accepted"]
    assert "TODO" in (draft_runs[0].critique or "")
    assert "TODO" not in (draft_runs[1].output or "")
    assert "StepRevised" in outbox_kinds(swarm, view.id)


async def test_a_step_the_critic_keeps_rejecting_fails_with_the_critique(swarm: Swarm) -> None:
    swarm.settings.max_troubleshoots_per_step = 0  # no troubleshooter: tests/test_recovery.py
    view = await run_goal(swarm, GOAL + " [reject-always]")
    steps = {st.key: st for st in view.steps}
    assert view.state == "failed"
    assert steps["s3"].state == "failed" and "TODO" in (steps["s3"].error or "")
    assert steps["s3"].attempts == swarm.settings.max_revisions + 1
    assert {steps["s4"].state, steps["s5"].state} == {"skipped"}
    assert steps["s1"].state == steps["s2"].state == "finished"


async def test_a_malformed_plan_is_reasked_then_fails_clearly(swarm: Swarm) -> None:
    started = await swarm.start_objective(GOAL + " [malformed-plan]", THREAD, "alice", "evt-1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "failed"
    assert "cycle" in (view.reason or "") and "valid plan" in (view.reason or "")
    with swarm.db.read() as s:
        asked = s.scalar(select(func.count()).select_from(LLMCall).where(
            LLMCall.objective_id == view.id, LLMCall.tier == "planner"))
    assert asked == swarm.settings.plan_repair_attempts + 1
    assert outbox_kinds(swarm, view.id)[-2:] == ["Notice", "ObjectiveFinished"]


async def test_a_malformed_plan_is_repaired_by_reasking(swarm: Swarm) -> None:
    view = await run_goal(swarm, GOAL + " [malformed-plan-once]")
    assert view.state == "finished" and len(view.steps) == 5


async def test_a_redelivered_event_starts_no_second_objective(swarm: Swarm) -> None:
    first = await swarm.start_objective(GOAL, THREAD, "alice", "slack:Ev123")
    again = await swarm.start_objective(GOAL, THREAD, "alice", "slack:Ev123")
    await swarm.join()
    assert again.duplicate and again.objective_id == first.objective_id
    with swarm.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Objective)) == 1


async def test_only_the_requester_or_an_approver_can_approve(swarm: Swarm) -> None:
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    approval = swarm.pending_approvals(started.objective_id)[0]
    refused = await swarm.decide(approval.id, "mallory", True)
    assert not refused.ok and "requester" in refused.message
    assert swarm.pending_approvals(started.objective_id)[0].id == approval.id
    swarm.settings.approvers = ["bob"]
    assert (await swarm.decide(approval.id, "bob", True)).ok
    again = await swarm.decide(approval.id, "alice", False)
    assert not again.ok and "Already approved by bob" in again.message


async def test_rejecting_the_plan_without_a_reason_cancels_the_objective(swarm: Swarm) -> None:
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    approval = swarm.pending_approvals(started.objective_id)[0]
    await swarm.decide(approval.id, "alice", False)  # with a reason it is replanned instead
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "cancelled"
    assert all(st.state == "cancelled" and st.attempts == 0 for st in view.steps)


async def test_a_worker_question_waits_for_the_humans_and_their_answer_is_used(
        swarm: Swarm) -> None:
    view = await run_goal(swarm, GOAL + ", ask us about the budget")
    steps = {st.key: st for st in view.steps}
    assert view.state == "running" and steps["s2"].state == "waiting_human"
    assert steps["s3"].state == "pending"  # its input is not ready
    [question] = swarm.open_questions(view.id)
    assert "budget" in question.text
    assert not await swarm.reply(THREAD.__class__("console", "team-a", "general", "other"),
                                 "alice", "wrong thread")
    assert await swarm.reply(THREAD, "alice", "Five million yen")
    view = await approve_all(swarm, view.id)
    steps = {st.key: st for st in view.steps}
    assert view.state == "finished"
    assert "Five million yen" in (steps["s2"].output or "")


async def test_a_reply_delivered_again_answers_no_later_question(swarm: Swarm) -> None:
    """Slack redelivers an event it thinks was not received, after a restart too: the reply
    that answered the first objective's question must not answer the next one's."""
    first = await run_goal(swarm, GOAL + ", ask us about the budget", key="evt-1")
    assert await swarm.reply(THREAD, "alice", "Five million yen", event_key="slack:Ev7")
    assert (await approve_all(swarm, first.id)).state == "finished"
    second = await run_goal(swarm, GOAL + ", ask us about the timeline", key="evt-2")
    assert len(swarm.open_questions(second.id)) == 1  # same thread, a new question
    assert not await swarm.reply(THREAD, "alice", "Five million yen", event_key="slack:Ev7")
    assert len(swarm.open_questions(second.id)) == 1
    assert await swarm.reply(THREAD, "bob", "By March", event_key="slack:Ev8")
    assert not swarm.open_questions(second.id)


async def test_pause_holds_new_steps_and_resume_finishes(swarm: Swarm) -> None:
    swarm.settings.offline_latency_ms = 60
    swarm.llm.settings = swarm.settings
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id, "alice", True)
    assert (await swarm.pause(started.objective_id, "alice")).ok
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused"
    assert {st.key for st in view.steps if st.state == "pending"} >= {"s3", "s4", "s5"}
    assert (await swarm.resume(started.objective_id, "alice")).ok
    view = await approve_all(swarm, started.objective_id)
    assert view.state == "finished"


async def test_cancel_stops_running_steps(swarm: Swarm) -> None:
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id, "alice", True)
    result = await swarm.cancel(started.objective_id, "alice")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert result.ok and view is not None and view.state == "cancelled"
    assert not any(st.state in ("running", "pending", "ready") for st in view.steps)
    assert not (await swarm.cancel(started.objective_id, "alice")).ok


async def test_tokens_and_cost_are_recorded_per_step_and_objective(swarm: Swarm) -> None:
    view = await run_goal(swarm, GOAL)
    runs = [r for rs in runs_by_key(swarm, view.id).values() for r in rs]
    with swarm.db.read() as s:
        calls = s.scalars(select(LLMCall).where(LLMCall.objective_id == view.id)).all()
    # every call of a step is booked to the attempt (run) that made it
    run_ids = {r.id for r in runs}
    step_calls = [c for c in calls if c.step_id]
    assert step_calls and all(c.run_id in run_ids for c in step_calls)
    assert sum(c.prompt_tokens + c.completion_tokens for c in step_calls) > 0
    assert view.tokens == sum(c.prompt_tokens + c.completion_tokens for c in calls)
    assert view.cost > 0 and abs(view.cost - sum(c.cost for c in calls)) < 1e-12


async def test_a_bug_inside_a_step_fails_that_step_and_the_objective_ends(
        swarm: Swarm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from swarm.engine import attempt as steps

    async def broken_review(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(steps, "review", broken_review)
    swarm.settings.max_troubleshoots_per_step = 0
    view = await run_goal(swarm, GOAL)
    steps_by_key = {st.key: st for st in view.steps}
    assert view.state == "failed"
    assert steps_by_key["s1"].state == "failed"
    assert "internal error: ZeroDivisionError" in (steps_by_key["s1"].error or "")
    assert {steps_by_key[k].state for k in ("s3", "s4", "s5")} == {"skipped"}
    assert "StepFailed" in outbox_kinds(swarm, view.id)


async def test_a_cancel_from_another_process_loses_no_other_objectives_results(
        swarm: Swarm, tmp_path, db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Steps that finish together are recorded together: one of them cancelled meanwhile (here
    by a second process on the same database) must not take the others down with it."""
    import asyncio

    from swarm.engine import attempt as steps
    from swarm.store.db import Database
    from swarm.store.models import ThreadRef
    from tests.conftest import make_settings

    gate, reviewing, real_review = asyncio.Event(), set(), steps.review

    async def gated_review(llm, role, brief, output, ctx):  # type: ignore[no-untyped-def]
        reviewing.add(ctx.step_id)
        await gate.wait()
        return await real_review(llm, role, brief, output, ctx)

    monkeypatch.setattr(steps, "review", gated_review)
    ids = []
    for n in (1, 2):
        thread = ThreadRef("console", "team-a", "general", f"t-{n}")
        ids.append((await swarm.start_objective(GOAL, thread, "alice", f"evt-{n}")).objective_id)
    await swarm.join()
    for oid in ids:
        await swarm.decide(swarm.pending_approvals(oid)[0].id, "alice", True)
    while len(reviewing) < 4:  # s1 and s2 of both objectives wait for their critic
        await asyncio.sleep(0.01)
    other_db = Database.connect(db_url)
    other = Swarm(make_settings(tmp_path, db_url), other_db)
    assert (await other.cancel(ids[0], "alice")).ok
    await other.shutdown()
    other_db.close()
    gate.set()
    monkeypatch.setattr(steps, "review", real_review)
    kept = await approve_all(swarm, ids[1])
    await swarm.join()
    cancelled = swarm.view(ids[0])
    assert cancelled is not None and cancelled.state == "cancelled"
    assert {st.key: st.state for st in cancelled.steps}["s1"] == "cancelled"
    assert kept.state == "finished" and all(st.output for st in kept.steps)
    with swarm.db.read() as s:  # the cancelled steps' critic calls were made: they are booked
        booked = s.scalar(select(func.count()).select_from(LLMCall).where(
            LLMCall.objective_id == ids[0], LLMCall.tier == "fast"))
    assert booked == 2
