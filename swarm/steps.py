"""One step's execution: claim, work, review, revise, record; each transition committed first."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarm.audit import audit
from swarm.events import QuestionAsked, StepFailed, StepFinished, StepRevised, StepStarted
from swarm.llm import CallContext, LLMError
from swarm.models import Note, Objective, Question, Step, StepRun, utcnow
from swarm.outbox import emit
from swarm.states import ObjectiveState, RunState, StepState, check_transition
from swarm.tools import ToolContext
from swarm.worker import StepBrief, review, run_worker

if TYPE_CHECKING:
    from swarm.service import Swarm

log = logging.getLogger(__name__)


@dataclass
class Claim:
    step_id: int
    run_id: int
    attempt: int
    role: str
    brief: StepBrief
    team_id: str


def set_step(step: Step, state: StepState) -> None:
    check_transition(StepState(step.state), state)
    step.state = state


def set_run(run: StepRun, state: RunState) -> None:
    check_transition(RunState(run.state), state)
    run.state = state
    run.finished_at = utcnow()


def _book(session: Session, run: StepRun, ctx: CallContext) -> None:
    """Write the calls made since the last transaction and add them to the run's totals."""
    for call in ctx.calls:
        run.prompt_tokens += call.prompt_tokens
        run.completion_tokens += call.completion_tokens
        run.cost += call.cost
    session.add_all(ctx.calls)
    ctx.calls = []


class StepRunner:
    """Runs one step to a resting state: finished, failed or waiting for a human."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm

    def _claim(self, objective_id: int, step_id: int) -> Claim | StepState:
        with self.swarm.db.tx() as s:
            step = s.get(Step, step_id)
            obj = s.get(Objective, objective_id)
            assert step is not None and obj is not None
            if obj.state != ObjectiveState.RUNNING or step.state not in (StepState.PENDING,
                                                                           StepState.READY):
                return StepState(step.state)  # someone else moved it: nothing to do
            set_step(step, StepState.RUNNING)
            step.attempts += 1
            step.started_at = step.started_at or utcnow()
            run = StepRun(step_id=step.id, objective_id=obj.id, attempt=step.attempts,
                          state=RunState.RUNNING)
            s.add(run)
            s.flush()
            emit(s, obj.thread, StepStarted(obj.id, step.id, step.title, step.role, step.attempts))
            return Claim(step.id, run.id, step.attempts, step.role,
                         self._brief(s, obj, step), obj.team_id)

    def _brief(self, s: Session, obj: Objective, step: Step) -> StepBrief:
        deps = s.scalars(select(Step).where(Step.objective_id == obj.id,
                                            Step.plan_version == step.plan_version,
                                            Step.key.in_(step.depends_on or [])))
        notes = s.scalars(select(Note.text).where(Note.objective_id == obj.id).order_by(Note.id))
        answers = s.execute(select(Question.text, Question.answer).where(
            Question.step_id == step.id, Question.answer.is_not(None)).order_by(Question.id))
        last = s.scalars(select(StepRun.critique).where(
            StepRun.step_id == step.id, StepRun.state == RunState.REJECTED)
            .order_by(StepRun.id.desc()).limit(1)).first()
        return StepBrief(goal=obj.goal, title=step.title, instructions=step.instructions,
                         inputs=[(d.title, d.output or "") for d in deps], notes=list(notes),
                         answers=[(q, a) for q, a in answers], critique=last)

    async def run(self, objective_id: int, step_id: int) -> StepState:
        claim = self._claim(objective_id, step_id)
        if not isinstance(claim, Claim):
            return claim
        sw = self.swarm
        role = sw.roles[claim.role]
        ctx = CallContext(objective_id, step_id, claim.team_id)
        tool_ctx = ToolContext(objective_id, step_id, claim.team_id,
                               recall=lambda q, k: sw.recall_texts(claim.team_id, q, k),
                               add_note=lambda text: sw.add_note(objective_id, step_id,
                                                                 claim.role, text))
        while True:
            try:
                result = await run_worker(sw.llm, role, claim.brief, sw.tools, tool_ctx, ctx,
                                          sw.settings.max_tool_rounds)
                if result.question is not None:
                    return self._wait_for_humans(claim, result.question, ctx)
                output = result.output or ""
                verdict = await review(sw.llm, sw.roles["critic"], claim.brief, output, ctx)
            except LLMError as exc:
                return self._fail(claim, str(exc), ctx)
            if verdict.approved:
                return self._finish(claim, output, verdict.critique, ctx)
            if claim.attempt > sw.settings.max_revisions:
                return self._fail(claim, f"rejected by the critic after {claim.attempt} "
                                         f"attempts: {verdict.critique}", ctx, output=output,
                                  critique=verdict.critique)
            claim = self._revise(claim, output, verdict.critique, ctx)

    def _revise(self, claim: Claim, output: str, critique: str, ctx: CallContext) -> Claim:
        with self.swarm.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            run.output, run.approved, run.critique = output, False, critique
            set_run(run, RunState.REJECTED)
            _book(s, run, ctx)
            step.attempts += 1
            nxt = StepRun(step_id=step.id, objective_id=step.objective_id, attempt=step.attempts,
                          state=RunState.RUNNING)
            s.add(nxt)
            s.flush()
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            emit(s, obj.thread, StepRevised(obj.id, step.id, step.title, step.attempts, critique))
        self.swarm.remember_later(claim.team_id, f"Critic on '{step.title}': {critique}",
                                  "critique", step.objective_id)
        claim.brief.critique = critique
        return Claim(claim.step_id, nxt.id, step.attempts, claim.role, claim.brief, claim.team_id)

    def _finish(self, claim: Claim, output: str, critique: str, ctx: CallContext) -> StepState:
        with self.swarm.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            run.output, run.approved, run.critique = output, True, critique
            set_run(run, RunState.ACCEPTED)
            _book(s, run, ctx)
            set_step(step, StepState.FINISHED)
            step.output, step.finished_at = output, utcnow()
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            emit(s, obj.thread, StepFinished(obj.id, step.id, step.title, step.role, output))
        return StepState.FINISHED

    def _fail(self, claim: Claim, error: str, ctx: CallContext, output: str | None = None,
              critique: str | None = None) -> StepState:
        with self.swarm.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            run.output, run.critique, run.error = output, critique, error
            if critique is not None:
                run.approved = False
            set_run(run, RunState.REJECTED if critique is not None else RunState.FAILED)
            _book(s, run, ctx)
            set_step(step, StepState.FAILED)
            step.error, step.finished_at = error, utcnow()
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            emit(s, obj.thread, StepFailed(obj.id, step.id, step.title, error))
            audit(s, "swarm", "step.failed", obj.id, step=step.key, error=error)
        log.info("step.failed objective=%s step=%s", step.objective_id, step.id)
        return StepState.FAILED

    def _wait_for_humans(self, claim: Claim, question: str, ctx: CallContext) -> StepState:
        with self.swarm.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            set_run(run, RunState.WAITING)
            _book(s, run, ctx)
            set_step(step, StepState.WAITING_HUMAN)
            q = Question(objective_id=step.objective_id, step_id=step.id, text=question)
            s.add(q)
            s.flush()
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            emit(s, obj.thread, QuestionAsked(obj.id, q.id, step.id, step.title, question))
            audit(s, "swarm", "question.asked", obj.id, step=step.key, question=question)
        return StepState.WAITING_HUMAN
