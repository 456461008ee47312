"""Typed events from the swarm to the humans, written to the outbox with the state change."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    objective_id: int
    progress: ClassVar[bool] = False  # progress events may be coalesced into one update

    @property
    def event_type(self) -> str:
        return type(self).__name__

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready fields; shallow where it can be (asdict's deep copy showed in profiles)."""
        return {k: [_fields_of(x) for x in v] if isinstance(v, list) and v and is_dataclass(v[0])
                else v for k, v in self.__dict__.items()}


def _fields_of(item: Any) -> dict[str, Any]:
    """A list item's fields, as asdict gives them without its deep copy (40 step results'
    asdict was a third of finishing an objective): the payload is written, never changed."""
    return {f.name: _fields_of(v) if is_dataclass(v := getattr(item, f.name)) else v
            for f in fields(item)}


@dataclass(frozen=True)
class PlannedStep:
    step_id: int
    key: str
    title: str
    role: str
    depends_on: list[str]
    needs_approval: bool
    team: bool = False


@dataclass(frozen=True)
class ObjectiveAccepted(Event):
    goal: str
    requester: str


@dataclass(frozen=True)
class PlanProposed(Event):
    approval_id: int
    version: int
    rationale: str
    steps: list[PlannedStep]
    # what the manager read as the objective's constraints, approved with the plan
    constraints: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ApprovalRequested(Event):
    approval_id: int
    kind: str  # plan | step | budget
    title: str
    step_id: int | None = None


@dataclass(frozen=True)
class ApprovalDecided(Event):
    approval_id: int
    kind: str
    title: str
    approved: bool
    user: str
    reason: str | None = None
    decided_at: str | None = None  # ISO 8601, UTC


@dataclass(frozen=True)
class StepStarted(Event):
    progress: ClassVar[bool] = True
    step_id: int
    title: str
    role: str
    attempt: int


@dataclass(frozen=True)
class StepRevised(Event):
    progress: ClassVar[bool] = True
    step_id: int
    title: str
    attempt: int
    critique: str


@dataclass(frozen=True)
class StepFinished(Event):
    progress: ClassVar[bool] = True
    step_id: int
    title: str
    role: str
    output: str


@dataclass(frozen=True)
class StepFailed(Event):
    progress: ClassVar[bool] = True
    step_id: int
    title: str
    error: str


@dataclass(frozen=True)
class TeamStarted(Event):
    """A team step handed to a team of its own: a child objective, in the same thread."""

    progress: ClassVar[bool] = True
    step_id: int
    title: str
    team: int  # the child objective's id


@dataclass(frozen=True)
class CallRetried(Event):
    """A model call is being recovered: retried, sent to a fallback model, or re-asked."""

    progress: ClassVar[bool] = True
    step_id: int | None
    tier: str
    model: str
    problem: str  # e.g. "RateLimitError (429)", "invalid CriticVerdict: approved: ..."
    action: str  # retry | fallback | re-ask
    next_model: str


@dataclass(frozen=True)
class StepTroubleshot(Event):
    """The troubleshooter's decision on a failed step, as it is applied."""

    step_id: int
    title: str
    error: str
    action: str  # retry | replan | ask_humans
    reason: str
    detail: str  # the new instructions, the replacing steps, or the question
    intervention: int  # this step's n-th intervention
    limit: int


@dataclass(frozen=True)
class QuestionAsked(Event):
    question_id: int
    step_id: int
    title: str
    question: str


@dataclass(frozen=True)
class ObjectiveStateChanged(Event):
    state: str
    actor: str
    reason: str | None = None


@dataclass(frozen=True)
class StepResult:
    title: str
    role: str
    state: str
    output: str


@dataclass(frozen=True)
class ObjectiveFinished(Event):
    state: str
    summary: str
    results: list[StepResult] = field(default_factory=list)
    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class Notice(Event):
    text: str


@dataclass(frozen=True)
class PictureRequested(Event):
    """Someone asked for a picture of the plan as it stands (`/swarm status ID --picture`)."""

    user: str


# Scheduled events (schedules/). A channel's own events (a digest) carry objective_id 0.
@dataclass(frozen=True)
class ApprovalReminder(Event):
    approval_id: int
    kind: str
    title: str
    waiting_s: float
    expires_in_s: float


@dataclass(frozen=True)
class ApprovalExpired(Event):
    """Nobody decided in time: the plan or step does not run and the objective is paused."""

    approval_id: int
    kind: str
    title: str
    waited_s: float


@dataclass(frozen=True)
class ConstraintVerdict:
    constraint: str
    status: str  # satisfied | violated | not_addressed
    evidence: str


@dataclass(frozen=True)
class DriftDetected(Event):
    """A grounding check found the work drifting: the steps not started yet are held."""

    check_id: int
    approval_id: int  # approve: apply the correction; reject: continue as planned
    signal: str  # prefilter | judge
    score: float
    drifted: str
    correction: str
    violated: list[ConstraintVerdict] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # titles of the held steps


@dataclass(frozen=True)
class WaitingApproval:
    objective_id: int
    approval_id: int
    title: str
    waiting_s: float


@dataclass(frozen=True)
class Digest(Event):
    """A channel's status digest; every figure is read from the database."""

    since: str  # ISO 8601, UTC
    started: int
    finished: int
    failed: int
    waiting: int  # objectives waiting for a human (approval, answer) or paused
    approvals: list[WaitingApproval] = field(default_factory=list)
    drift_notices: int = 0
    cost: float = 0.0  # USD spent by this channel's objectives since `since`
    unpriced: bool = False  # some calls had no price: `cost` is a lower bound
    month_cost: float = 0.0  # the team's spend this month
    month_budget: float | None = None  # the team's monthly USD ceiling (None: none)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (ObjectiveAccepted, PlanProposed, ApprovalRequested, ApprovalDecided,
                StepStarted, StepRevised, StepFinished, StepFailed, QuestionAsked,
                ObjectiveStateChanged, ObjectiveFinished, Notice, CallRetried, StepTroubleshot,
                PictureRequested, TeamStarted, ApprovalReminder, ApprovalExpired,
                DriftDetected, Digest)
}
_NESTED: dict[str, type] = {"steps": PlannedStep, "results": StepResult,
                            "violated": ConstraintVerdict, "approvals": WaitingApproval}


def event_from_payload(kind: str, payload: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[kind]
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in payload.items() if k in names}
    for name, nested in _NESTED.items():
        if name in values:
            values[name] = [nested(**item) for item in values[name]]
    return cls(**values)
