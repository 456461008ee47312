"""Recurring objectives: an admin registers a goal with a cron (`/swarm every ...`) and each
firing starts a new objective in that channel, with its own budget, its workers' model tier and
its unattended-approval policy: `ask` waits for a human (reminded, then expired), `auto`
approves the plan but not risky steps, `deny` approves the plan and skips risky steps."""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from schedules.clock import Clock, current
from schedules.digests import channel_thread
from schedules.registry import every
from schedules.tables import RecurringGoal, RecurringRun
from swarm.llm.budget import objective_key
from swarm.states import TERMINAL_OBJECTIVE, ApprovalState
from swarm.store.models import Approval, BudgetCeiling, Objective, ObjectiveOverride, utcnow

log = logging.getLogger(__name__)
POLICIES = ("ask", "auto", "deny")
TIERS = ("planner", "worker", "fast")  # a run's workers may use another tier's models


def requester_of(recurring_id: int) -> str:
    return f"schedule:{recurring_id}"


async def fire(recurring_id: int) -> None:
    """The job of one recurring goal (id `recurring:<id>`)."""
    await start_run(current(), recurring_id)


async def start_run(clock: Clock, recurring_id: int, now: datetime | None = None) -> int | None:
    """Start this firing's objective; a firing started once (same goal, same second) is not
    started again."""
    now = now or utcnow()
    with clock.db.read() as s:
        goal = s.get(RecurringGoal, recurring_id)
    if goal is None:
        return None
    started = await clock.swarm.start_objective(
        goal.goal, channel_thread(goal.platform, goal.team_id, goal.channel_id),
        requester_of(recurring_id), f"recurring:{recurring_id}:{now:%Y%m%dT%H%M%S}")
    if started.duplicate:
        return None
    # before the planner's first call, which runs once this coroutine yields
    with clock.db.tx(wake=False) as s:
        s.add(RecurringRun(recurring_id=recurring_id, objective_id=started.objective_id,
                           fired_at=now))
        if goal.budget_usd is not None:
            s.add(BudgetCeiling(key=objective_key(started.objective_id), usd=goal.budget_usd))
        if goal.tier is not None:
            s.add(ObjectiveOverride(objective_id=started.objective_id, worker_tier=goal.tier))
    log.info("recurring.fired recurring=%s objective=%s", recurring_id, started.objective_id)
    return started.objective_id


@every("recurring.policies", lambda settings: settings.approval_sweep_every)
async def policies() -> None:
    await apply_policies(current())


async def apply_policies(clock: Clock) -> list[tuple[int, bool]]:
    """Decide what a recurring goal's policy decides unattended; returns (approval, approved)."""
    with clock.db.read() as s:
        pending = list(s.execute(
            select(Approval.id, Approval.kind, RecurringGoal.id, RecurringGoal.policy)
            .join(Objective, Objective.id == Approval.objective_id)
            .join(RecurringRun, RecurringRun.objective_id == Objective.id)
            .join(RecurringGoal, RecurringGoal.id == RecurringRun.recurring_id)
            .where(Approval.state == ApprovalState.PENDING,
                   Objective.state.not_in([o.value for o in TERMINAL_OBJECTIVE]),
                   RecurringGoal.policy.in_(["auto", "deny"]),
                   Approval.kind.in_(["plan", "step"]))
            .order_by(Approval.id)))
    decided: list[tuple[int, bool]] = []
    for approval_id, kind, recurring_id, policy in pending:
        if kind == "plan":
            approve, reason = True, f"unattended policy '{policy}': the plan is approved"
        elif policy == "deny":
            approve, reason = False, "unattended policy 'deny': risky steps are skipped"
        else:
            continue  # auto: a risky step waits for a human
        result = await clock.swarm.decide(approval_id, requester_of(recurring_id), approve,
                                          reason)
        if result.ok:
            decided.append((approval_id, approve))
    return decided
