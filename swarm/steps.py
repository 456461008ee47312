"""One step's execution: claim, work, review, revise, record; each transition committed first."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Update,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from swarm import troubleshooter
from swarm.audit import audit
from swarm.budget import BudgetExceeded
from swarm.events import (
    QuestionAsked,
    StepFailed,
    StepFinished,
    StepRevised,
    StepStarted,
    StepTroubleshot,
)
from swarm.llm import CallContext, LLMError
from swarm.models import (
    Intervention,
    LLMCall,
    Note,
    Objective,
    Question,
    Step,
    StepRun,
    ThreadRef,
    table,
    utcnow,
)
from swarm.outbox import emit
from swarm.states import IllegalTransition, ObjectiveState, RunState, StepState, check_transition
from swarm.tools import ToolContext
from swarm.worker import StepBrief, review, run_worker

if TYPE_CHECKING:
    from swarm.service import Swarm

log = logging.getLogger(__name__)
Q = TypeVar("Q")
R = TypeVar("R")


@dataclass
class Claim:
    objective_id: int
    step_id: int
    run_id: int
    attempt: int
    role: str
    brief: StepBrief
    team_id: str
    thread: ThreadRef  # carried, so later transactions need not load the objective again


@dataclass(frozen=True)
class _Objective:
    id: int
    goal: str
    team_id: str
    thread: ThreadRef


# The hot path (claim and finish, twice per step) runs these prebuilt Core statements: the
# WHERE clause of each UPDATE is the state machine's check, and a statement built once compiles
# once. Everything rarer goes through the ORM.
_steps, _runs, _objectives = table(Step), table(StepRun), table(Objective)
_notes, _questions = table(Note), table(Question)


def _claim(which: ColumnElement[bool]) -> Update:
    return (
        update(_steps)
        .where(which, or_(_steps.c.state == StepState.PENDING, _steps.c.state == StepState.READY),
               select(_objectives.c.id).where(_objectives.c.id == bindparam("oid"),
                                              _objectives.c.state == ObjectiveState.RUNNING)
               .exists())
        .values(state=StepState.RUNNING, attempts=_steps.c.attempts + 1,
                started_at=func.coalesce(_steps.c.started_at, bindparam("now")))
        .returning(_steps.c.id, _steps.c.attempts, _steps.c.title, _steps.c.role,
                   _steps.c.instructions, _steps.c.depends_on, _steps.c.plan_version))


# One step, or a layer's: an expanding IN is rendered again at each execution (~30 us).
_CLAIM_ONE = _claim(_steps.c.id == bindparam("sid"))
_CLAIM_MANY = _claim(_steps.c.id.in_(bindparam("sids", expanding=True)))
_STATE_OF = select(_steps.c.state).where(_steps.c.id == bindparam("sid"))
_STATES_OF = select(_steps.c.id, _steps.c.state).where(
    _steps.c.id.in_(bindparam("sids", expanding=True)))
_INSERT_RUNS = insert(_runs).returning(_runs.c.id, _runs.c.step_id, sort_by_parameter_order=True)
_INPUTS = select(_steps.c.plan_version, _steps.c.key, _steps.c.title, _steps.c.output).where(
    _steps.c.objective_id == bindparam("oid"), _steps.c.key.in_(bindparam("keys", expanding=True)))
_NOTES = select(_notes.c.text).where(_notes.c.objective_id == bindparam("oid")) \
    .order_by(_notes.c.id)
_ANSWERS = select(_questions.c.text, _questions.c.answer).where(
    _questions.c.step_id == bindparam("sid"), _questions.c.answer.is_not(None)
).order_by(_questions.c.id)
_LAST_CRITIQUE = select(_runs.c.critique).where(
    _runs.c.step_id == bindparam("sid"), _runs.c.state == RunState.REJECTED
).order_by(_runs.c.id.desc()).limit(1)
_ACCEPT_RUN = (
    update(_runs).where(_runs.c.id == bindparam("rid"), _runs.c.state == RunState.RUNNING)
    .values(state=RunState.ACCEPTED, approved=True, output=bindparam("output"),
            critique=bindparam("critique"), finished_at=bindparam("now"),
            prompt_tokens=_runs.c.prompt_tokens + bindparam("pt"),
            completion_tokens=_runs.c.completion_tokens + bindparam("ct"),
            cost=_runs.c.cost + bindparam("cost")))
_FINISH_STEP = (
    update(_steps).where(_steps.c.id == bindparam("sid"), _steps.c.state == StepState.RUNNING)
    .values(state=StepState.FINISHED, output=bindparam("output"), finished_at=bindparam("now")))
_INSERT_CALLS = insert(table(LLMCall))
_CALL_COLUMNS = tuple(c.key for c in table(LLMCall).c if c.key != "id")


_Accepted = tuple[Claim, str, str, CallContext]  # claim, output, the critic's words, calls


# At most this many transitions per transaction, the rest on the next turn: a batch spares
# commits, but while it is written no other step moves. With 100 objectives at once (500 steps
# a layer) one batch held every step back; 8 gave the best wall time (bench/orchestration.py).
_MOST = 8


class _Turn(Generic[Q, R]):
    """Requests made during one turn of the event loop, served together on the next turn, at
    most `most` at a time."""

    def __init__(self, serve: Callable[[list[Q]], list[R | Exception]], most: int) -> None:
        self._serve = serve
        self._most = most
        self._waiting: list[tuple[Q, asyncio.Future[R]]] = []

    async def __call__(self, request: Q) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting[:self._most], self._waiting[self._most:]
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            results = self._serve([request for request, _ in waiting])
        except Exception as exc:  # the transaction rolled back: every waiter sees why
            results = [exc] * len(waiting)
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():  # its task was cancelled: a claimed step stays running until
                continue       # recover() runs it again after a restart
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _totals(ctx: CallContext) -> tuple[int, int, float]:
    return (sum(c.prompt_tokens for c in ctx.calls), sum(c.completion_tokens for c in ctx.calls),
            sum(c.cost for c in ctx.calls))


def _values(call: LLMCall) -> dict[str, Any]:
    values = {k: getattr(call, k) for k in _CALL_COLUMNS}
    values["created_at"] = values["created_at"] or utcnow()
    return values


def set_step(step: Step, state: StepState) -> None:
    check_transition(StepState(step.state), state)
    step.state = state


def set_run(run: StepRun, state: RunState) -> None:
    check_transition(RunState(run.state), state)
    run.state = state
    run.finished_at = utcnow()


def _book(session: Session, run: StepRun, ctx: CallContext) -> None:
    """Write the calls made since the last transaction and add them to the run's totals."""
    prompt, completion, cost = _totals(ctx)
    run.prompt_tokens += prompt
    run.completion_tokens += completion
    run.cost += cost
    session.add_all(ctx.calls)
    ctx.calls = []


def _close_unsuccessful(session: Session, run: StepRun, ctx: CallContext, output: str | None,
                        critique: str | None, error: str) -> None:
    """End a run that produced no accepted output: rejected by the critic, or failed."""
    run.output, run.critique, run.error = output, critique, error
    if critique is not None:
        run.approved = False
    set_run(run, RunState.REJECTED if critique is not None else RunState.FAILED)
    _book(session, run, ctx)


class StepRunner:
    """Runs one step to a resting state: finished, failed or waiting for a human."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self._objectives: dict[int, _Objective] = {}
        # Steps of a DAG layer start, and finish, in the same turn of the loop: each of the two
        # transitions is written for all of them in one transaction.
        self._claim: _Turn[tuple[int, int], Claim | StepState] = _Turn(self._claim_all, _MOST)
        self._finish: _Turn[_Accepted, StepState] = _Turn(self._finish_all, _MOST)

    def _claim_all(self, requests: list[tuple[int, int]]) -> list[Claim | StepState | Exception]:
        """Claims asked for in one turn of the loop: one transaction per objective."""
        by_objective: dict[int, list[int]] = {}
        for objective_id, step_id in requests:
            by_objective.setdefault(objective_id, []).append(step_id)
        done: dict[tuple[int, int], Claim | StepState | Exception] = {}
        for objective_id, step_ids in by_objective.items():
            try:
                claims = self._claim_many(objective_id, step_ids)
                done.update(((objective_id, sid), claims[sid]) for sid in step_ids)
            except Exception as exc:  # those steps fail (the engine's crash path), not others
                done.update(((objective_id, sid), exc) for sid in step_ids)
        return [done[r] for r in requests]

    def _claim_many(self, objective_id: int, step_ids: list[int]) -> dict[int, Claim | StepState]:
        obj = self._objective(objective_id)
        now = utcnow()
        with self.swarm.db.core() as c:
            claimed = c.execute(_CLAIM_ONE, {"sid": step_ids[0], "oid": objective_id, "now": now}) \
                if len(step_ids) == 1 else \
                c.execute(_CLAIM_MANY, {"sids": step_ids, "oid": objective_id, "now": now})
            steps = {r.id: r for r in claimed}
            out: dict[int, Claim | StepState] = {  # paused, cancelled, or moved by another
                sid: StepState(state) for sid, state in c.execute(_STATES_OF, {
                    "sids": [sid for sid in step_ids if sid not in steps]})} \
                if len(steps) < len(step_ids) else {}
            if not steps:
                return out
            runs = c.execute(_INSERT_RUNS, [
                {"step_id": sid, "objective_id": objective_id, "attempt": st.attempts,
                 "state": RunState.RUNNING, "started_at": now} for sid, st in steps.items()])
            run_ids = {step_id: run_id for run_id, step_id in runs}
            emit(c, obj.thread, *(StepStarted(objective_id, sid, st.title, st.role, st.attempts)
                                  for sid, st in steps.items()))
            briefs = self._briefs(c, obj, steps)
            for sid, st in steps.items():
                out[sid] = Claim(objective_id, sid, run_ids[sid], st.attempts, st.role,
                                 briefs[sid], obj.team_id, obj.thread)
        return out

    def _objective(self, objective_id: int) -> _Objective:
        """An objective's goal, team and thread, which never change: read once, then kept."""
        if (known := self._objectives.get(objective_id)) is None:
            with self.swarm.db.read() as s:
                obj = s.get(Objective, objective_id)
                assert obj is not None
                known = _Objective(obj.id, obj.goal, obj.team_id, obj.thread)
            if len(self._objectives) >= 4096:
                self._objectives.pop(next(iter(self._objectives)))
            self._objectives[objective_id] = known
        return known

    def _briefs(self, c: Connection, obj: _Objective,
                steps: dict[int, Row[Any]]) -> dict[int, StepBrief]:
        wanted = {(st.plan_version, k) for st in steps.values() for k in st.depends_on or ()}
        outputs: dict[tuple[int, str], tuple[str, str]] = {}
        if wanted:
            outputs = {(pv, key): (title, output or "") for pv, key, title, output in c.execute(
                _INPUTS, {"oid": obj.id, "keys": sorted({k for _, k in wanted})})}
        notes = list(c.scalars(_NOTES, {"oid": obj.id}))
        briefs: dict[int, StepBrief] = {}
        for sid, st in steps.items():
            answers: list[tuple[str, str]] = []
            last: str | None = None
            if st.attempts > 1:  # a first attempt has asked nothing and been rejected by no one
                answers = [(q, a or "") for q, a in c.execute(_ANSWERS, {"sid": sid})]
                last = c.scalar(_LAST_CRITIQUE, {"sid": sid})
            inputs = [outputs[(st.plan_version, k)] for k in st.depends_on or ()
                      if (st.plan_version, k) in outputs]
            briefs[sid] = StepBrief(goal=obj.goal, title=st.title, instructions=st.instructions,
                                    inputs=inputs, notes=list(notes), answers=answers,
                                    critique=last)
        return briefs

    async def run(self, objective_id: int, step_id: int) -> StepState:
        claim = await self._claim((objective_id, step_id))
        if not isinstance(claim, Claim):
            return claim
        sw = self.swarm
        role = sw.roles[claim.role]
        team, role_name = claim.team_id, claim.role
        ctx = CallContext(objective_id, step_id, team)
        tool_ctx = ToolContext(objective_id, step_id, team,
                               recall=lambda q, k: sw.recall_texts(team, q, k),
                               add_note=lambda text: sw.add_note(objective_id, step_id,
                                                                 role_name, text))
        while True:
            try:
                result = await run_worker(sw.llm, role, claim.brief, sw.tools, tool_ctx, ctx,
                                          sw.settings.max_tool_rounds)
                if result.question is not None:
                    return self._wait_for_humans(claim, result.question, ctx)
                output = result.output or ""
                verdict = await review(sw.llm, sw.roles["critic"], claim.brief, output, ctx)
            except BudgetExceeded as exc:
                return self._hold_for_budget(claim, exc, ctx)
            except LLMError as exc:
                return await self._troubleshoot(claim, str(exc), ctx)
            if verdict.approved:
                return await self._finish((claim, output, verdict.critique, ctx))
            if claim.attempt > sw.settings.max_revisions and \
                    claim.attempt > sw.settings.max_revisions + self._revision_base(claim):
                return await self._troubleshoot(
                    claim, f"rejected by the critic after {claim.attempt} attempts: "
                           f"{verdict.critique}", ctx, output=output, critique=verdict.critique)
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
            emit(s, claim.thread, StepRevised(step.objective_id, step.id, step.title,
                                              step.attempts, critique))
        self.swarm.remember_later(claim.team_id, f"Critic on '{step.title}': {critique}",
                                  "critique", step.objective_id)
        claim.brief.critique = critique
        return Claim(claim.objective_id, claim.step_id, nxt.id, step.attempts, claim.role,
                     claim.brief, claim.team_id, claim.thread)

    def _finish_all(self, requests: list[_Accepted]) -> list[StepState | Exception]:
        """Accepted outputs recorded in one turn of the loop: one transaction for all of them."""
        now = utcnow()
        out: list[StepState | Exception] = []
        calls: list[dict[str, Any]] = []
        events: list[tuple[ThreadRef, StepFinished]] = []
        with self.swarm.db.core() as c:
            for claim, output, critique, ctx in requests:
                calls += [_values(call) for call in ctx.calls]  # made and paid for, whatever
                prompt, completion, cost = _totals(ctx)                # happens next
                ctx.calls = []
                if not c.execute(_FINISH_STEP, {"sid": claim.step_id, "output": output,
                                                "now": now}).rowcount:
                    # cancelled meanwhile (e.g. from another process): its run was closed
                    # with it, and the others in the batch go on
                    out.append(StepState(c.execute(_STATE_OF, {"sid": claim.step_id})
                                         .scalar_one()))
                    continue
                if not c.execute(_ACCEPT_RUN, {"rid": claim.run_id, "output": output,
                                               "critique": critique, "now": now, "pt": prompt,
                                               "ct": completion, "cost": cost}).rowcount:
                    raise IllegalTransition(f"run {claim.run_id} of a running step is not running")
                events.append((claim.thread, StepFinished(claim.objective_id, claim.step_id,
                                                          claim.brief.title, claim.role, output)))
                out.append(StepState.FINISHED)
            if calls:
                c.execute(_INSERT_CALLS, calls)
            for thread, event in events:
                emit(c, thread, event)
        return out

    def _fail(self, claim: Claim, error: str, ctx: CallContext, output: str | None = None,
              critique: str | None = None) -> StepState:
        with self.swarm.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            _close_unsuccessful(s, run, ctx, output, critique, error)
            set_step(step, StepState.FAILED)
            step.error, step.finished_at = error, utcnow()
            emit(s, claim.thread, StepFailed(step.objective_id, step.id, step.title, error))
            audit(s, "swarm", "step.failed", step.objective_id, step=step.key, error=error)
        log.info("step.failed objective=%s step=%s", step.objective_id, step.id)
        return StepState.FAILED

    def fail_crashed(self, step_id: int, error: str) -> StepState:
        """A bug inside a step's run: fail that step visibly instead of leaving it running."""
        with self.swarm.db.tx() as s:
            step = s.get(Step, step_id)
            obj = s.get(Objective, step.objective_id) if step else None
            if step is None or obj is None or step.state != StepState.RUNNING:
                return StepState(step.state) if step else StepState.FAILED
            for run in s.scalars(select(StepRun).where(StepRun.step_id == step_id,
                                                       StepRun.state == RunState.RUNNING)):
                run.error = error
                set_run(run, RunState.FAILED)
            set_step(step, StepState.FAILED)
            step.error, step.finished_at = error, utcnow()
            emit(s, obj.thread, StepFailed(obj.id, step.id, step.title, error))
            audit(s, "swarm", "step.crashed", obj.id, step=step.key, error=error)
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
            emit(s, claim.thread, QuestionAsked(step.objective_id, q.id, step.id, step.title,
                                                question))
            audit(s, "swarm", "question.asked", step.objective_id, step=step.key,
                  question=question)
        return StepState.WAITING_HUMAN

    # -- recovery: the troubleshooter, and budget holds -------------------------------------
    def _revision_base(self, claim: Claim) -> int:
        with self.swarm.db.read() as s:
            return troubleshooter.revision_base(s, claim.step_id)

    async def _troubleshoot(self, claim: Claim, error: str, ctx: CallContext,
                            output: str | None = None, critique: str | None = None) -> StepState:
        """A step that failed after its retries: ask the troubleshooter, within the bounds."""
        sw = self.swarm
        with sw.db.read() as s:
            earlier = troubleshooter.history(s, claim.step_id)
            total = troubleshooter.objective_count(s, ctx.objective_id or 0)
        per_step, per_objective = (sw.settings.max_troubleshoots_per_step,
                                   sw.settings.max_troubleshoots_per_objective)
        if "troubleshooter" not in sw.roles:
            return self._fail(claim, error, ctx, output=output, critique=critique)
        if len(earlier) >= per_step or total >= per_objective:
            spent = (f"{len(earlier)} of {per_step} for this step" if len(earlier) >= per_step
                     else f"{total} of {per_objective} for this objective")
            return self._fail(claim, f"{error} (no troubleshooting left: {spent} used)", ctx,
                              output=output, critique=critique)
        failed = troubleshooter.FailedStep(claim.brief.goal, claim.brief.title, claim.role,
                                           claim.brief.instructions, error, output)
        try:
            decision = await troubleshooter.decide(sw.llm, sw.roles["troubleshooter"], sw.roles,
                                                   failed, earlier, ctx,
                                                   max_steps=sw.settings.max_replan_steps)
        except BudgetExceeded as exc:
            return self._hold_for_budget(claim, exc, ctx)
        except LLMError as exc:
            return self._fail(claim, f"{error}; the troubleshooter could not help: {exc}", ctx,
                              output=output, critique=critique)
        return self._troubleshot(claim, decision, error, ctx, output, critique, len(earlier) + 1)

    def _troubleshot(self, claim: Claim, decision: troubleshooter.TroubleshootDecision,
                     error: str, ctx: CallContext, output: str | None, critique: str | None,
                     number: int) -> StepState:
        """Apply the decision in one transaction with its event and audit entry."""
        sw = self.swarm
        with sw.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            _close_unsuccessful(s, run, ctx, output, critique, error)
            new_steps: list[Step] = []
            question: Question | None = None
            if decision.action == "retry":
                step.instructions = decision.instructions
                state = StepState.READY
            elif decision.action == "replan":
                new_steps = troubleshooter.replace_step(s, step, decision.steps, sw.roles)
                step.error = f"replaced by {', '.join(st.key for st in new_steps)}: " \
                             f"{decision.reason}"
                step.finished_at = utcnow()
                state = StepState.REPLACED
            else:
                question = Question(objective_id=step.objective_id, step_id=step.id,
                                    text=decision.question)
                s.add(question)
                state = StepState.WAITING_HUMAN
            set_step(step, state)
            line, detail = troubleshooter.detail_of(decision, new_steps)
            s.add(Intervention(objective_id=step.objective_id, step_id=step.id,
                               action=decision.action, reason=decision.reason, error=error,
                               detail=detail, attempts=step.attempts))
            s.flush()
            emit(s, claim.thread, StepTroubleshot(
                step.objective_id, step.id, step.title, error, decision.action, decision.reason,
                line, number, sw.settings.max_troubleshoots_per_step))
            if question is not None:
                emit(s, claim.thread, QuestionAsked(step.objective_id, question.id, step.id,
                                                    step.title, question.text))
            audit(s, "troubleshooter", "step.troubleshot", step.objective_id, step=step.key,
                  decision=decision.action, reason=decision.reason, error=error, detail=detail)
        log.info("step.troubleshot objective=%s step=%s action=%s n=%d", step.objective_id,
                 step.id, decision.action, number)
        if new_steps:
            sw.engine.poke(step.objective_id)  # the driver must load the new steps
        return state

    def _hold_for_budget(self, claim: Claim, exc: BudgetExceeded, ctx: CallContext) -> StepState:
        """The call was not made: the step waits (ready) and the objective pauses for approval."""
        sw = self.swarm
        with sw.db.tx() as s:
            run, step = s.get(StepRun, claim.run_id), s.get(Step, claim.step_id)
            assert run is not None and step is not None
            run.error = str(exc)
            set_run(run, RunState.ABANDONED)
            _book(s, run, ctx)
            set_step(step, StepState.READY)
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            sw.hold_for_budget(s, obj, exc)
        sw.engine.poke(step.objective_id)  # the driver must see the pause before it restarts
        return StepState.READY
