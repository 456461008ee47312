"""Grounding checks: hold an objective's recent work against its goal, constraints, approved plan
and the humans' decisions. Run after every K finished steps (the engine's checkpoint, before
any further step starts), every THREADSWARM_GROUNDING_EVERY for each running objective with new
outputs, and on `/swarm ground ID`. A team (a child objective) has no checks of its own: its
summary is its parent step's output, which the root's checks read. On drift the swarm holds the
steps not started yet and asks the humans (swarm.services.objectives.Swarm.hold_for_drift)."""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from schedules.clock import current
from schedules.prefilter import Output, off_topic, similarities
from schedules.registry import every
from swarm.agents.grounding import GroundingVerdict, judge
from swarm.events import ConstraintVerdict
from swarm.llm.budget import BudgetExceeded
from swarm.llm.client import CallContext, LLMError
from swarm.services.objectives import Swarm, constraints_of
from swarm.states import ApprovalState, ObjectiveState, StepState
from swarm.store.audit import audit
from swarm.store.db import after_commit
from swarm.store.models import Approval, GroundingCheck, Objective, Question, Step, utcnow

log = logging.getLogger(__name__)
RECENT_OUTPUTS = 6
OUTPUT_CHARS = 3000  # of each output, for the judge
_GROUNDERS: weakref.WeakKeyDictionary[Swarm, Grounder] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Work:
    """What a check reads: the objective, and what its steps produced since the last check."""

    objective_id: int
    goal: str
    team_id: str
    constraints: list[str]
    plan: list[str]
    decisions: list[str]
    outputs: list[Output]
    until: datetime | None  # the newest output's finish time


@dataclass(frozen=True)
class Outcome:
    check_id: int
    aligned: bool
    signal: str
    score: float
    held: bool


def read_work(swarm: Swarm, objective_id: int) -> Work | None:
    with swarm.db.read() as s:
        obj = s.get(Objective, objective_id)
        if obj is None or obj.parent_id is not None:
            return None  # a team is checked with its tree's root (its summary is a step's output)
        since = s.scalar(select(GroundingCheck.outputs_until)
                         .where(GroundingCheck.objective_id == objective_id)
                         .order_by(GroundingCheck.id.desc()).limit(1))
        steps = list(s.scalars(select(Step).where(Step.objective_id == objective_id,
                                                  Step.plan_version == obj.plan_version)
                               .order_by(Step.position)))
        done = [st for st in steps if st.state == StepState.FINISHED and st.output
                and st.finished_at is not None and (since is None or st.finished_at > since)]
        done = sorted(done, key=lambda st: st.finished_at or utcnow())[-RECENT_OUTPUTS:]
        decisions = [f"{a.decided_by} {a.state} {a.kind}: {a.title}"
                     + (f" ({a.reason})" if a.reason else "")
                     for a in s.scalars(select(Approval).where(
                         Approval.objective_id == objective_id,
                         Approval.state.in_([ApprovalState.APPROVED, ApprovalState.REJECTED]))
                         .order_by(Approval.id))]
        decisions += [f"{q.answered_by} answered '{q.text}': {q.answer}"
                      for q in s.scalars(select(Question).where(
                          Question.objective_id == objective_id,
                          Question.answer.is_not(None)).order_by(Question.id))]
        return Work(obj.id, obj.goal, obj.team_id, constraints_of(s, obj.id).lines(),
                    [f"{st.key} {st.role}: {st.title} — {st.instructions[:300]}" for st in steps],
                    decisions,
                    [Output(st.title, st.instructions, st.output or "") for st in done],
                    max((st.finished_at for st in done if st.finished_at), default=since))


def grounder_for(swarm: Swarm) -> Grounder:
    """The swarm's grounder (a judge-only one if the composition root made none)."""
    return _GROUNDERS.get(swarm) or Grounder(swarm)


class Grounder:
    """Runs grounding checks for one swarm; `embedder` (team memory's) enables the pre-filter."""

    def __init__(self, swarm: Swarm, embedder: Any = None) -> None:
        self.swarm, self.embedder = swarm, embedder
        _GROUNDERS[swarm] = self

    async def checkpoint(self, objective_id: int) -> None:
        """The engine's checkpoint after every K finished steps."""
        await self.check(objective_id, "steps")

    async def check(self, objective_id: int, trigger: str) -> Outcome | None:
        """None: nothing new to check, or the judge could not answer (logged, audited)."""
        sw = self.swarm
        work = read_work(sw, objective_id)
        if work is None or not work.outputs:
            return None
        min_sim = sw.settings.grounding_min_similarity
        sims = await similarities(self.embedder, work.goal, work.outputs) \
            if self.embedder is not None else []
        if (tangents := off_topic(sims, min_sim)):
            names = ", ".join(f"'{t.title}'" for t in tangents)
            verdict = GroundingVerdict(
                aligned=False, score=round(min(t.best for t in tangents), 3),
                drifted=f"the output of {names} is about something else than its step and "
                        f"the goal", correction=f"Redo {names} on its instructions; stay on "
                                                f"the goal: {work.goal}")
            signal = "prefilter"
        else:
            try:
                verdict = await judge(sw.llm, work.goal, work.constraints, work.plan,
                                      work.decisions, [(o.title, o.text[:OUTPUT_CHARS])
                                                       for o in work.outputs],
                                      CallContext(objective_id, None, work.team_id))
            except BudgetExceeded as exc:
                held = exc
                await sw.db.retrying(lambda: self._budget_hold(objective_id, held),
                                     "grounding.budget_hold")
                return None
            except LLMError as exc:
                log.warning("grounding.judge_unavailable objective=%s error=%s", objective_id,
                            type(exc).__name__)
                return None
            signal = "judge"
        drift = not verdict.aligned or bool(verdict.violated)
        return await sw.db.retrying(
            lambda: self._record(work, trigger, signal, verdict, drift, sims), "grounding.record")

    def _budget_hold(self, objective_id: int, exc: BudgetExceeded) -> None:
        with self.swarm.db.tx() as s:
            obj = s.get(Objective, objective_id, with_for_update=True)
            if obj is not None and obj.state == ObjectiveState.RUNNING:
                self.swarm.hold_for_budget(s, obj, exc)

    def _record(self, work: Work, trigger: str, signal: str, verdict: GroundingVerdict,
                drift: bool, sims: list[Any]) -> Outcome:
        sw = self.swarm
        violated = [ConstraintVerdict(v.constraint, v.status, v.evidence)
                    for v in verdict.violated]
        with sw.db.tx() as s:
            obj = s.get(Objective, work.objective_id)
            assert obj is not None
            check = GroundingCheck(
                objective_id=obj.id, trigger=trigger, signal=signal, aligned=not drift,
                score=verdict.score, verdicts=[v.model_dump() for v in verdict.constraints],
                drifted=verdict.drifted if drift else "",
                correction=verdict.correction if drift else "", outputs_until=work.until)
            s.add(check)
            s.flush()
            audit(s, "grounding", "grounding.checked", obj.id, check=check.id, trigger=trigger,
                  signal=signal, aligned=not drift, score=verdict.score,
                  outputs=[o.title for o in work.outputs],
                  similarity=[round(x.best, 3) for x in sims])
            held = drift and sw.hold_for_drift(s, obj, check, violated)
            if not drift:
                text = (f"Grounding check of '{obj.goal}': on track (score {verdict.score:.2f}) "
                        f"after {', '.join(o.title for o in work.outputs)}.")
                team, oid = obj.team_id, obj.id
                after_commit(s, lambda: sw.remember_later(team, text, "note", oid, "grounding"))
            outcome = Outcome(check.id, not drift, signal, verdict.score, held)
        log.info("grounding.checked objective=%s trigger=%s signal=%s aligned=%s held=%s",
                 work.objective_id, trigger, signal, outcome.aligned, held)
        return outcome


@every("grounding.sweep", lambda settings: settings.grounding_every)
async def sweep() -> None:
    """Every running objective with outputs since its last check is checked."""
    clock = current()
    with clock.db.read() as s:
        running = list(s.scalars(select(Objective.id)
                                 .where(Objective.state == ObjectiveState.RUNNING,
                                        Objective.parent_id.is_(None))))
    for objective_id in running:
        await clock.grounder.check(objective_id, "schedule")
