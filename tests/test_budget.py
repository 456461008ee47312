"""Budgets: a call that would pass a ceiling is not made; the objective pauses for approval."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import func, select

from swarm.llm.budget import BudgetExceeded, objective_key, team_key
from swarm.llm.client import CallContext
from swarm.services.objectives import Swarm
from swarm.store.models import AuditEntry, BudgetCeiling, LLMCall, utcnow
from swarm.store.spend import month_key
from tests.fakes.openai_server import FakeOpenAI
from tests.scenarios import THREAD, approve_all, outbox_kinds
from tests.test_spend import over_fake

GOAL = "Launch a localized campaign for our SaaS in Japan"
ASK = [{"role": "user", "content": "OBJECTIVE: x\nSTEP: Say hello\nINSTRUCTIONS: Greet."}]


def recorded(swarm: Swarm, objective_id: int) -> tuple[int, int]:
    """(rows, tokens) of the objective's calls in the database."""
    with swarm.db.read() as s:
        rows, tokens = s.execute(select(
            func.count(LLMCall.id),
            func.coalesce(func.sum(LLMCall.prompt_tokens + LLMCall.completion_tokens), 0))
            .where(LLMCall.objective_id == objective_id)).one()
    return int(rows), int(tokens)


async def test_a_ceiling_pauses_the_objective_before_the_call_that_would_pass_it(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    ceiling = 1200
    swarm = make_swarm(**over_fake(openai_server, objective_budget_tokens=ceiling,
                                   llm_max_tokens=300))
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id, "alice", True)
    await swarm.join()

    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused" and "budget" in (view.reason or "")
    [approval] = swarm.pending_approvals(view.id)
    assert approval.kind == "budget" and "from 1,200 tokens to 2,400 tokens" in approval.title
    rows, tokens = recorded(swarm, view.id)
    assert rows == len(openai_server.requests())  # the blocked call never reached the server
    assert tokens <= ceiling
    with swarm.db.read() as s:
        held = s.scalars(select(AuditEntry.detail).where(
            AuditEntry.action == "budget.exceeded")).first()
    assert held is not None and held["used_tokens"] + held["estimate_tokens"] > ceiling

    view = await approve_all(swarm, view.id)  # each raise is approved as it is asked
    assert view.state == "finished"
    with swarm.db.read() as s:
        raised = s.scalar(select(BudgetCeiling.tokens).where(
            BudgetCeiling.key == objective_key(view.id)))
    assert raised is not None and raised >= 2 * ceiling
    assert recorded(swarm, view.id)[1] <= raised  # spend never passed the ceiling in force
    kinds = outbox_kinds(swarm, view.id)
    assert kinds.count("ApprovalRequested") >= 2 and kinds[-1] == "ObjectiveFinished"


async def test_parallel_calls_of_one_objective_cannot_all_pass_the_check_at_once(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(offline_latency_ms=200, llm_max_tokens=200)
    estimate = swarm.budget.estimate(("offline/rehearsal",), ASK, None, None)
    swarm.settings.objective_budget_tokens = int(estimate.tokens * 1.5)  # room for one call

    results = await asyncio.gather(
        swarm.llm.complete("worker", ASK, CallContext(objective_id=42)),
        swarm.llm.complete("worker", ASK, CallContext(objective_id=42)),
        return_exceptions=True)
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 1  # the second saw the hold
    # once the first has returned, it holds what it actually used (less than its estimate)
    ctx = CallContext(objective_id=42)
    await swarm.llm.complete("worker", ASK, ctx)
    assert len(ctx.calls) == 1 and ctx.calls[0].prompt_tokens < estimate.tokens


async def test_rejecting_a_budget_raise_cancels_the_objective(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(objective_budget_usd=0.0000001)
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused" and recorded(swarm, view.id) == (0, 0)
    [approval] = swarm.pending_approvals(view.id)
    assert (await swarm.decide(approval.id, "alice", False)).ok
    await swarm.join()
    view = swarm.view(view.id)
    assert view is not None and view.state == "cancelled" and "budget" in (view.summary or "")


async def test_a_team_monthly_budget_pauses_planning_and_approving_it_resumes_planning(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(team_monthly_budget_tokens=300, llm_max_tokens=200)
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused" and not view.steps
    [approval] = swarm.pending_approvals(view.id)
    assert f"team {THREAD.team_id}'s {month_key(utcnow())} spend" in approval.title

    await swarm.decide(approval.id, "alice", True)
    await swarm.join()
    assert "PlanProposed" in outbox_kinds(swarm, view.id)  # planning resumed and finished
    with swarm.db.read() as s:
        raised = s.scalar(select(BudgetCeiling.tokens).where(
            BudgetCeiling.key == team_key(THREAD.team_id, month_key(utcnow()))))
    assert raised is not None and raised >= 600
    view = await approve_all(swarm, view.id)
    assert view.state == "finished"
