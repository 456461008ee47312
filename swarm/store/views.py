"""Read models: what status commands and progress messages show of an objective."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from swarm.states import StepState
from swarm.store.models import Objective, Step, ThreadRef, utcnow
from swarm.store.spend import Spend, step_spend

# columns (read, never changed), prebuilt: every progress message and finish reads them
_STEPS = (select(Step.id, Step.key, Step.title, Step.role, Step.state, Step.attempts,
                 Step.depends_on, Step.output, Step.error, Step.started_at, Step.finished_at,
                 Step.team)
          .where(Step.objective_id == bindparam("oid"), Step.plan_version == bindparam("version"))
          .order_by(Step.position))


@dataclass(frozen=True)
class StepView:
    id: int
    key: str
    title: str
    role: str
    state: str
    attempts: int
    depends_on: list[str]
    output: str | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    spend: Spend = field(default_factory=Spend)
    team: bool = False  # done by a team of its own (ObjectiveView.teams holds it, once started)

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclass(frozen=True)
class ObjectiveView:
    id: int
    goal: str
    state: str
    reason: str | None
    requester: str
    thread: ThreadRef
    created_at: datetime
    finished_at: datetime | None
    steps: list[StepView]
    tokens: int
    cost: float
    summary: str | None
    spend: Spend = field(default_factory=Spend)
    # steps a troubleshooter replaced by smaller ones: history, not part of the live plan
    replaced: list[StepView] = field(default_factory=list)
    parent_id: int | None = None  # a team's: the objective whose step it does
    depth: int = 0
    teams: dict[int, ObjectiveView] = field(default_factory=dict)  # step id -> its team

    @property
    def elapsed_s(self) -> float:
        return ((self.finished_at or utcnow()) - self.created_at).total_seconds()

    @property
    def done(self) -> int:
        return sum(st.state == StepState.FINISHED for st in self.steps)


def objective_view(s: Session, obj: Objective) -> ObjectiveView:
    steps = s.execute(_STEPS, {"oid": obj.id, "version": obj.plan_version})
    by_step = step_spend(s, obj.id, with_totals=True)
    total = by_step.pop(None, Spend())
    views = [StepView(st.id, st.key, st.title, st.role, st.state, st.attempts,
                      list(st.depends_on), st.output, st.error, st.started_at, st.finished_at,
                      by_step.get(st.id, Spend()), bool(st.team)) for st in steps]
    teams: dict[int, ObjectiveView] = {}
    if any(v.team for v in views):  # a flat plan costs no query more
        teams = {child.parent_step_id: objective_view(s, child) for child in s.scalars(
            select(Objective).where(Objective.parent_id == obj.id)) if child.parent_step_id}
    return ObjectiveView(
        obj.id, obj.goal, obj.state, obj.state_reason, obj.requester, obj.thread,
        obj.created_at, obj.finished_at, [v for v in views if v.state != StepState.REPLACED],
        total.tokens, total.cost, obj.summary, total,
        [v for v in views if v.state == StepState.REPLACED], obj.parent_id, obj.depth, teams)
