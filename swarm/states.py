"""Objective, step and run states, and the one function that allows a transition."""
from __future__ import annotations

from enum import StrEnum


class ObjectiveState(StrEnum):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepState(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    READY = "ready"
    RUNNING = "running"
    WAITING_HUMAN = "waiting_human"
    WAITING_TEAM = "waiting_team"  # a team step: its team (a child objective) does the work
    FINISHED = "finished"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    REPLACED = "replaced"  # by a troubleshooter's sub-plan; its dependents were rewired


class RunState(StrEnum):
    RUNNING = "running"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    WAITING = "waiting"
    ABANDONED = "abandoned"


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CLOSED = "closed"  # its objective ended, or its step changed, before anyone decided
    EXPIRED = "expired"  # nobody decided in time: what it asked for does not run (fails closed)


Ob, S, R = ObjectiveState, StepState, RunState
TERMINAL_OBJECTIVE = frozenset({Ob.FINISHED, Ob.FAILED, Ob.CANCELLED})
TERMINAL_STEP = frozenset({S.FINISHED, S.FAILED, S.SKIPPED, S.CANCELLED, S.REPLACED})

_ALLOWED: dict[type, dict[str, frozenset[str]]] = {
    ObjectiveState: {
        # running: a team's plan runs at once, its step was approved with its parent's plan
        Ob.PLANNING: frozenset({Ob.AWAITING_APPROVAL, Ob.PAUSED, Ob.FAILED, Ob.CANCELLED,
                                Ob.RUNNING}),
        # paused: its plan's approval expired
        Ob.AWAITING_APPROVAL: frozenset({Ob.RUNNING, Ob.CANCELLED, Ob.PLANNING, Ob.PAUSED}),
        Ob.RUNNING: frozenset({Ob.PAUSED, Ob.FINISHED, Ob.FAILED, Ob.CANCELLED, Ob.PLANNING}),
        # awaiting approval: resumed after its plan's approval expired, the plan is asked again
        Ob.PAUSED: frozenset({Ob.RUNNING, Ob.PLANNING, Ob.CANCELLED, Ob.AWAITING_APPROVAL}),
    },
    StepState: {
        S.PENDING: frozenset({S.AWAITING_APPROVAL, S.READY, S.RUNNING, S.SKIPPED, S.CANCELLED}),
        # pending: its approval expired, or its instructions were corrected; asked again
        S.AWAITING_APPROVAL: frozenset({S.READY, S.SKIPPED, S.CANCELLED, S.PENDING}),
        S.READY: frozenset({S.RUNNING, S.CANCELLED}),
        S.RUNNING: frozenset({S.FINISHED, S.FAILED, S.WAITING_HUMAN, S.READY, S.CANCELLED,
                              S.REPLACED, S.PENDING,  # pending: new instructions, asked again
                              S.WAITING_TEAM}),
        S.WAITING_HUMAN: frozenset({S.READY, S.CANCELLED}),
        # ready: its team finished, the step now writes the team's summary; failed: it did not
        S.WAITING_TEAM: frozenset({S.READY, S.FAILED, S.CANCELLED}),
    },
    RunState: {
        R.RUNNING: frozenset({R.ACCEPTED, R.REJECTED, R.FAILED, R.WAITING, R.ABANDONED}),
    },
    ApprovalState: {
        ApprovalState.PENDING: frozenset({ApprovalState.APPROVED, ApprovalState.REJECTED,
                                          ApprovalState.CLOSED, ApprovalState.EXPIRED}),
    },
}


class IllegalTransition(RuntimeError):
    """A bug: code tried a transition the state machine forbids."""


def sources(new: StrEnum) -> frozenset[str]:
    """Every state that may move to `new`: the WHERE clause of a guarded UPDATE, so that of
    two processes making the same move exactly one changes the row."""
    return frozenset(str(cur) for cur, allowed in _ALLOWED[type(new)].items() if new in allowed)


def check_transition(current: StrEnum, new: StrEnum) -> None:
    """Raise IllegalTransition unless current -> new is allowed for its kind of state."""
    if current == new:
        return
    allowed = _ALLOWED[type(current)].get(current, frozenset())
    if new not in allowed:
        raise IllegalTransition(f"{type(current).__name__}: {current} -> {new}")
