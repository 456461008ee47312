"""Approval reminders and expiry: a pending approval is reminded in its thread once, after
THREADSWARM_APPROVAL_REMIND_AFTER, and expires after THREADSWARM_APPROVAL_EXPIRE_AFTER.

Expiry fails closed: the plan or step it asked about does not run, the objective pauses (an
admin resumes it, and the plan or step is then asked again), and the approval message says so.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from schedules.clock import Clock, current
from schedules.registry import every
from schedules.tables import ReminderSent
from swarm.events import ApprovalExpired, ApprovalReminder, ObjectiveStateChanged
from swarm.states import TERMINAL_OBJECTIVE, ApprovalState, ObjectiveState, StepState
from swarm.store.audit import audit
from swarm.store.guards import decide_approval, move_objective, move_step
from swarm.store.models import Approval, Objective, Step, utcnow
from swarm.store.outbox import emit

log = logging.getLogger(__name__)
ACTOR = "schedule"


@every("approvals.sweep", lambda settings: settings.approval_sweep_every)
async def sweep() -> None:
    clock = current()
    await clock.db.retrying(lambda: sweep_approvals(clock), "approvals.sweep")


def sweep_approvals(clock: Clock, now: datetime | None = None) -> tuple[list[int], list[int]]:
    """Remind and expire what is due; returns (reminded, expired) approval ids."""
    now = now or utcnow()
    st = clock.settings
    with clock.db.read() as s:
        pending = list(s.execute(
            select(Approval.id, Approval.requested_at, ReminderSent.id.label("reminded"))
            .join(Objective, Objective.id == Approval.objective_id)
            .outerjoin(ReminderSent, ReminderSent.approval_id == Approval.id)
            .where(Approval.state == ApprovalState.PENDING,
                   Objective.state.not_in([o.value for o in TERMINAL_OBJECTIVE]),
                   Approval.requested_at <= now - st.approval_remind_after)))
    reminded: list[int] = []
    expired: list[int] = []
    for approval_id, requested_at, was_reminded in pending:
        if requested_at <= now - st.approval_expire_after:
            if expire(clock, approval_id, now):
                expired.append(approval_id)
        elif was_reminded is None and remind(clock, approval_id, now):
            reminded.append(approval_id)
    return reminded, expired


def remind(clock: Clock, approval_id: int, now: datetime) -> bool:
    """Remind once; of two processes reminding one approval, the unique key lets one."""
    try:
        with clock.db.tx() as s:
            approval = s.get(Approval, approval_id)
            assert approval is not None
            obj = s.get(Objective, approval.objective_id)
            assert obj is not None
            if approval.state != ApprovalState.PENDING:
                return False
            s.add(ReminderSent(approval_id=approval_id, reminded_at=now))
            s.flush()
            waited = (now - approval.requested_at).total_seconds()
            left = clock.settings.approval_expire_after.total_seconds() - waited
            emit(s, obj.thread, ApprovalReminder(obj.id, approval.id, approval.kind,
                                                 approval.title, waited, max(0.0, left)))
            audit(s, ACTOR, "approval.reminded", obj.id, approval=approval.id,
                  waited_s=round(waited))
    except IntegrityError:
        return False
    log.info("approval.reminded approval=%s", approval_id)
    return True


def expire(clock: Clock, approval_id: int, now: datetime) -> bool:
    """Expire the approval and pause its objective, in one guarded transaction."""
    with clock.db.tx() as s:
        approval = s.get(Approval, approval_id)
        assert approval is not None
        obj = s.get(Objective, approval.objective_id)
        assert obj is not None
        waited = (now - approval.requested_at).total_seconds()
        reason = (f"Approval #{approval.id} expired after {_hours(waited)} without a decision: "
                  f"nothing it asked for ran. An admin can resume the objective.")
        if not decide_approval(s, approval, ApprovalState.EXPIRED, ACTOR, reason):
            return False  # decided meanwhile, here or in another process
        if approval.kind == "step" and approval.step_id is not None:
            step = s.get(Step, approval.step_id)
            assert step is not None  # asked again when the objective resumes
            move_step(s, step, StepState.PENDING, only_from=[StepState.AWAITING_APPROVAL])
        emit(s, obj.thread, ApprovalExpired(obj.id, approval.id, approval.kind, approval.title,
                                            waited))
        if move_objective(s, obj, ObjectiveState.PAUSED, reason,
                          only_from=[ObjectiveState.RUNNING, ObjectiveState.AWAITING_APPROVAL]):
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, ObjectiveState.PAUSED, ACTOR,
                                                      reason))
        audit(s, ACTOR, "approval.expired", obj.id, approval=approval.id, kind=approval.kind,
              waited_s=round(waited))
    log.info("approval.expired approval=%s", approval_id)
    return True


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
