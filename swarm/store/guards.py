"""Guarded writes: each state change is an UPDATE whose WHERE clause is the state machine's
check (and, for a running step, its claim), and its row count says whether this process made
it. Of two processes making the same move, exactly one changes the row; the other is told."""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from swarm.states import TERMINAL_OBJECTIVE, ApprovalState, ObjectiveState, StepState, sources
from swarm.store.models import Approval, Objective, Step, table, utcnow

# Core tables, not ORM entities: a guarded UPDATE needs none of the ORM's bulk-update work
# (its synchronisation is off anyway, `_apply` mirrors the row), and that work was most of a
# move's CPU in profiles of the one-objective runs (bench/orchestration.py).
_OBJECTIVES, _STEPS, _APPROVALS = table(Objective), table(Step), table(Approval)


def _allowed(to: StrEnum, only_from: Iterable[StrEnum] | None) -> list[str]:
    allowed = sources(to)
    if only_from is not None:
        allowed &= {str(s) for s in only_from}
    return sorted(allowed)


def changed(s: Session, statement: Executable) -> bool:
    """Run a guarded UPDATE: True when it changed the row (this process made the move). The
    session's pending changes are written first, as the ORM's own UPDATE autoflushed them."""
    s.flush()
    return cast(CursorResult[Any], s.execute(statement)).rowcount == 1


def _apply(s: Session, row: Any, done: bool, values: dict[str, Any]) -> bool:
    """Mirror a guarded UPDATE on the session's copy of the row: its values when it changed
    the row, the database's when another process got there first."""
    if done:
        for key, value in values.items():
            set_committed_value(row, key, value)
    else:
        s.refresh(row)
    return done


def move_objective(s: Session, obj: Objective, to: ObjectiveState, reason: str | None = None,
                   *, only_from: Iterable[ObjectiveState] | None = None,
                   **values: Any) -> bool:
    """Move `obj` to `to` if its state allows it now (and is one of `only_from`)."""
    now = utcnow()
    values |= {"state": str(to), "state_reason": reason, "updated_at": now}
    if to in TERMINAL_OBJECTIVE:
        values["finished_at"] = now
    t = _OBJECTIVES
    done = changed(s, update(t).where(t.c.id == obj.id, t.c.state.in_(_allowed(to, only_from)))
                   .values(**values))
    return _apply(s, obj, done, values)


def move_step(s: Session, step: Step, to: StepState, *,
              only_from: Iterable[StepState] | None = None, claim: str | None = None,
              **values: Any) -> bool:
    """Move `step` to `to` if its state allows it now; with `claim`, only while that claim
    still owns the running step."""
    values |= {"state": str(to)}
    if to != StepState.RUNNING:
        values |= {"claim_token": None, "lease_owner": None, "lease_expires_at": None}
    t = _STEPS
    where = [t.c.id == step.id, t.c.state.in_(_allowed(to, only_from))]
    if claim is not None:
        where.append(t.c.claim_token == claim)
    done = changed(s, update(t).where(*where).values(**values))
    return _apply(s, step, done, values)


def decide_approval(s: Session, approval: Approval, to: ApprovalState, user: str | None,
                    reason: str | None = None) -> bool:
    """Settle a pending approval once: of two racing decisions exactly one returns True."""
    values: dict[str, Any] = {"state": str(to), "decided_by": user, "decided_at": utcnow(),
                              "reason": reason}
    t = _APPROVALS
    done = changed(s, update(t).where(t.c.id == approval.id, t.c.state.in_(_allowed(to, None)))
                   .values(**values))
    return _apply(s, approval, done, values)
