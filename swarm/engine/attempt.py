"""One step's run: claim it, work, review, revise, and record how it came to rest.

A claim owns the running step (token, owner, lease; swarm.engine.leases). Every write after the
claim is guarded by its token, so a process whose step was taken over (its lease expired, the
objective was cancelled elsewhere) changes nothing and learns the step's state instead; that is
decided per row, never by failing a batch. Writes are retried with backoff on brief database
errors. The model calls are booked as they return (swarm.llm.calls), not here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from swarm.agents import troubleshooter
from swarm.agents.critic import review
from swarm.agents.roles import Role
from swarm.agents.tools import ToolContext, ToolRegistry
from swarm.agents.worker import StepBrief, run_worker
from swarm.config import Settings
from swarm.engine import leases
from swarm.events import (
    QuestionAsked,
    StepFailed,
    StepFinished,
    StepRevised,
    StepStarted,
    StepTroubleshot,
)
from swarm.llm.budget import BudgetExceeded
from swarm.llm.calls import CallBook, Taken
from swarm.llm.client import LLM, CallContext, LLMError
from swarm.prompts import render
from swarm.states import IllegalTransition, ObjectiveState, RunState, StepState, check_transition
from swarm.store import owners
from swarm.store.audit import audit
from swarm.store.db import Database, after_commit
from swarm.store.guards import move_step
from swarm.store.models import (
    Intervention,
    Note,
    Objective,
    ObjectiveOverride,
    Question,
    Step,
    StepRun,
    ThreadRef,
    table,
    utcnow,
)
from swarm.store.outbox import emit
from swarm.store.turns import Turn

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StepServices:
    """All a step run needs: the database, the models, the roles and tools, and a few of the
    swarm's services. Nothing here holds a task or waits for a human, so a worker in another
    process can build its own from the database and settings alone."""

    db: Database
    settings: Settings
    llm: LLM
    roles: dict[str, Role]
    tools: ToolRegistry
    recall_texts: Callable[[str, str, int], Awaitable[list[str]]]
    add_note: Callable[[int, int, str, str], Awaitable[None]]
    remember_later: Callable[[str, str, str, int | None], None]
    hold_for_budget: Callable[[Session, Objective, BudgetExceeded], None]
    calls: CallBook  # where the model calls are booked as they return
    poke: Callable[[int], None] = field(default=lambda objective_id: None)  # the engine's
    # start the team (a child objective) of a team step, in the step's transaction: its id
    open_team: Callable[[Session, Step], int] = field(default=lambda s, step: _no_teams())


def _no_teams() -> int:
    raise RuntimeError("this swarm was built without teams")


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
    token: str  # the claim's identity: every write of this run is guarded by it
    rejections: int  # by the critic, since the step was last troubleshot
    ctx: CallContext
    team: bool = False  # a team step: its team does the work, this run delegates or sums up
    lost: bool = False  # the lease was taken over: stop at the next model call's end


@dataclass(frozen=True)
class _Objective:
    id: int
    goal: str
    team_id: str
    thread: ThreadRef
    worker_tier: str | None = None  # its workers' model tier, when it has its own


# The hot path (claim and finish, twice per step) runs these prebuilt Core statements: the
# WHERE clause of each UPDATE is the state machine's check, and a statement built once compiles
# once. Everything rarer goes through the ORM.
_steps, _runs, _objectives = table(Step), table(StepRun), table(Objective)
_notes, _questions, _interventions = table(Note), table(Question), table(Intervention)


def _claim(which: ColumnElement[bool]) -> Update:
    # a pending step that needs approval is asked for first (engine); only a ready one runs
    startable = or_(_steps.c.state == StepState.READY,
                    and_(_steps.c.state == StepState.PENDING, _steps.c.needs_approval.is_(False)))
    return (
        update(_steps)
        .where(which, startable,
               select(_objectives.c.id).where(_objectives.c.id == bindparam("oid"),
                                              _objectives.c.state == ObjectiveState.RUNNING)
               .exists())
        .values(state=StepState.RUNNING, attempts=_steps.c.attempts + 1,
                started_at=func.coalesce(_steps.c.started_at, bindparam("now")),
                claim_token=bindparam("token"), lease_owner=bindparam("owner"),
                lease_expires_at=bindparam("until"))
        .returning(_steps.c.id, _steps.c.attempts, _steps.c.title, _steps.c.role,
                   _steps.c.instructions, _steps.c.depends_on, _steps.c.plan_version,
                   _steps.c.team))


# One step, or a layer's: an expanding IN is rendered again at each execution (~30 us).
_CLAIM_ONE = _claim(_steps.c.id == bindparam("sid"))
_CLAIM_MANY = _claim(_steps.c.id.in_(bindparam("sids", expanding=True)))
_STATE_OF = select(_steps.c.state).where(_steps.c.id == bindparam("sid"))
_STATES_OF = select(_steps.c.id, _steps.c.state).where(
    _steps.c.id.in_(bindparam("sids", expanding=True)))
_STILL_HELD = select(_steps.c.id).where(_steps.c.id == bindparam("sid"),
                                        _steps.c.state == StepState.RUNNING,
                                        _steps.c.claim_token == bindparam("token"))
_INSERT_RUNS = _runs.insert().returning(_runs.c.id, _runs.c.step_id,
                                        sort_by_parameter_order=True)
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
# Revisions are counted in the critic's rejections since the step was last troubleshot: a human
# answer or a budget pause makes a new attempt, not a revision.
_REJECTIONS = select(func.count()).select_from(_runs).where(
    _runs.c.step_id == bindparam("sid"), _runs.c.state == RunState.REJECTED,
    _runs.c.attempt > func.coalesce(
        select(func.max(_interventions.c.attempts))
        .where(_interventions.c.step_id == bindparam("sid")).scalar_subquery(), 0))
_ACCEPT_RUN = (
    update(_runs).where(_runs.c.id == bindparam("rid"), _runs.c.state == RunState.RUNNING)
    .values(state=RunState.ACCEPTED, approved=True, output=bindparam("output"),
            critique=bindparam("critique"), finished_at=bindparam("now")))
_FINISH_STEP = (
    update(_steps).where(_steps.c.id == bindparam("sid"), _steps.c.state == StepState.RUNNING,
                         _steps.c.claim_token == bindparam("token"))
    .values(state=StepState.FINISHED, output=bindparam("output"), finished_at=bindparam("now"),
            claim_token=None, lease_owner=None, lease_expires_at=None))
_RELEASE = (
    update(_steps).where(_steps.c.id == bindparam("sid"), _steps.c.state == StepState.RUNNING,
                         _steps.c.claim_token == bindparam("token"))
    .values(state=StepState.READY, claim_token=None, lease_owner=None, lease_expires_at=None))
_ABANDON_RUN = (
    update(_runs).where(_runs.c.id == bindparam("rid"), _runs.c.state == RunState.RUNNING)
    .values(state=RunState.ABANDONED, finished_at=bindparam("now"),
            error="its process stopped"))


_Accepted = tuple[Claim, str, str]  # claim, output, the critic's words


def set_run(run: StepRun, state: RunState) -> None:
    check_transition(RunState(run.state), state)
    run.state = state
    run.finished_at = utcnow()


def _close_unsuccessful(run: StepRun, output: str | None, critique: str | None,
                        error: str) -> None:
    """End a run that produced no accepted output: rejected by the critic, or failed."""
    run.output, run.critique, run.error = output, critique, error
    if critique is not None:
        run.approved = False
    set_run(run, RunState.REJECTED if critique is not None else RunState.FAILED)


def _owned(s: Session, claim: Claim) -> tuple[Step, StepRun] | None:
    """The step and run, locked, while `claim` still owns them; None once it does not."""
    step = s.scalar(select(Step).where(Step.id == claim.step_id,
                                       Step.state == StepState.RUNNING,
                                       Step.claim_token == claim.token).with_for_update())
    if step is None:
        return None
    run = s.get(StepRun, claim.run_id)
    assert run is not None
    return step, run


def _state(s: Session, step_id: int) -> StepState:
    return StepState(s.execute(select(Step.state).where(Step.id == step_id)).scalar_one())


class StepRunner:
    """Runs one step to a resting state: finished, failed or waiting for a human."""

    def __init__(self, services: StepServices) -> None:
        self.swarm = services
        self.owner = owners.new_owner()
        self._objectives: dict[int, _Objective] = {}
        self._held: dict[int, Claim] = {}  # step id -> this process's claim on it
        self._heartbeat: asyncio.Task[None] | None = None
        # A worker process sets it: a cancel there is a row, not a task.cancel(), so after each
        # model call the claim is read again (one indexed SELECT) and a run that lost it stops.
        self.check_claims = False
        # Steps of a DAG layer start, and finish, in the same turn of the loop: each of the two
        # transitions is written for all of them in one transaction.
        self._claim: Turn[tuple[int, int], Claim | StepState] = Turn(self._claim_all)
        self._finish: Turn[_Accepted, StepState] = Turn(self._finish_all)

    async def _write(self, write: Callable[[], T], what: str) -> T:
        return await self.swarm.db.retrying(write, what)

    # -- claim -------------------------------------------------------------------------------
    async def _claim_all(self, requests: list[tuple[int, int]]
                         ) -> list[Claim | StepState | Exception]:
        """Claims asked for in one turn of the loop: one transaction per objective."""
        by_objective: dict[int, list[int]] = {}
        for objective_id, step_id in requests:
            by_objective.setdefault(objective_id, []).append(step_id)
        done: dict[tuple[int, int], Claim | StepState | Exception] = {}
        for objective_id, step_ids in by_objective.items():
            try:
                obj = self._objective(objective_id)
                claims = await self._write(partial(self._claim_many, obj, step_ids),
                                           "step.claim")
                done.update(((objective_id, sid), claims[sid]) for sid in step_ids)
            except Exception as exc:  # those steps fail (the engine's crash path), not others
                done.update(((objective_id, sid), exc) for sid in step_ids)
        return [done[r] for r in requests]

    def _claim_many(self, obj: _Objective, step_ids: list[int]) -> dict[int, Claim | StepState]:
        now, token = utcnow(), uuid.uuid4().hex
        params = {"oid": obj.id, "now": now, "token": token, "owner": self.owner,
                  "until": leases.expiry(self.swarm.settings.lease_s, now)}
        with self.swarm.db.core() as c:
            claimed = c.execute(_CLAIM_ONE, {"sid": step_ids[0], **params}) \
                if len(step_ids) == 1 else c.execute(_CLAIM_MANY, {"sids": step_ids, **params})
            steps = {r.id: r for r in claimed}
            out: dict[int, Claim | StepState] = {  # paused, cancelled, or moved by another
                sid: StepState(state) for sid, state in c.execute(_STATES_OF, {
                    "sids": [sid for sid in step_ids if sid not in steps]})} \
                if len(steps) < len(step_ids) else {}
            if not steps:
                return out
            runs = c.execute(_INSERT_RUNS, [
                {"step_id": sid, "objective_id": obj.id, "attempt": st.attempts,
                 "state": RunState.RUNNING, "started_at": now} for sid, st in steps.items()])
            run_ids = {step_id: run_id for run_id, step_id in runs}
            emit(c, obj.thread, *(StepStarted(obj.id, sid, st.title, st.role, st.attempts)
                                  for sid, st in steps.items()))
            briefs = self._briefs(c, obj, steps)
            for sid, st in steps.items():
                brief, rejections = briefs[sid]
                out[sid] = Claim(obj.id, sid, run_ids[sid], st.attempts, st.role, brief,
                                 obj.team_id, obj.thread, token, rejections,
                                 CallContext(obj.id, sid, obj.team_id, run_ids[sid]),
                                 bool(st.team))
        return out

    def _objective(self, objective_id: int) -> _Objective:
        """An objective's goal, team and thread, which never change: read once, then kept."""
        if (known := self._objectives.get(objective_id)) is None:
            with self.swarm.db.read() as s:
                obj = s.get(Objective, objective_id)
                assert obj is not None
                tier = s.scalar(select(ObjectiveOverride.worker_tier)
                                .where(ObjectiveOverride.objective_id == objective_id))
                known = _Objective(obj.id, obj.goal, obj.team_id, obj.thread, tier)
            if len(self._objectives) >= 4096:
                self._objectives.pop(next(iter(self._objectives)))
            self._objectives[objective_id] = known
        return known

    def _briefs(self, c: Connection, obj: _Objective,
                steps: dict[int, Row[Any]]) -> dict[int, tuple[StepBrief, int]]:
        wanted = {(st.plan_version, k) for st in steps.values() for k in st.depends_on or ()}
        outputs: dict[tuple[int, str], tuple[str, str]] = {}
        if wanted:
            outputs = {(pv, key): (title, output or "") for pv, key, title, output in c.execute(
                _INPUTS, {"oid": obj.id, "keys": sorted({k for _, k in wanted})})}
        notes = list(c.scalars(_NOTES, {"oid": obj.id}))
        briefs: dict[int, tuple[StepBrief, int]] = {}
        for sid, st in steps.items():
            answers: list[tuple[str, str]] = []
            last: str | None = None
            rejections = 0
            if st.attempts > 1:  # a first attempt has asked nothing and been rejected by no one
                answers = [(q, a or "") for q, a in c.execute(_ANSWERS, {"sid": sid})]
                last = c.scalar(_LAST_CRITIQUE, {"sid": sid})
                rejections = int(c.scalar(_REJECTIONS, {"sid": sid}) or 0)
            inputs = [outputs[(st.plan_version, k)] for k in st.depends_on or ()
                      if (st.plan_version, k) in outputs]
            briefs[sid] = (StepBrief(goal=obj.goal, title=st.title, instructions=st.instructions,
                                     inputs=inputs, notes=list(notes), answers=answers,
                                     critique=last), rejections)
        return briefs

    # -- the run -----------------------------------------------------------------------------
    async def run(self, objective_id: int, step_id: int) -> StepState:
        claim = await self._claim((objective_id, step_id))
        if not isinstance(claim, Claim):
            return claim
        self._held[step_id] = claim
        self._keep_alive()
        try:
            return await self._work(claim)
        except Exception as exc:  # a bug inside the step: fail it visibly, never leave it running
            log.exception("step.crashed objective=%s step=%s", objective_id, step_id)
            error = f"internal error: {type(exc).__name__}"
            return await self._write(lambda: self._fail(claim, error, action="step.crashed"),
                                     "step.crashed")
        finally:
            self._held.pop(step_id, None)

    async def _work(self, claim: Claim) -> StepState:
        sw = self.swarm
        if claim.team:
            found = self._team_of(claim.step_id)
            if found is None or found[1] != ObjectiveState.FINISHED:
                return await self._write(partial(self._delegate, claim, found is None),
                                         "step.delegate")
            # the team finished: this run sums up its results, reviewed like any output
            claim.brief.instructions = render("team_summary", team=found[0],
                                              instructions=claim.brief.instructions)
            claim.brief.inputs = found[2]
        role = sw.roles[claim.role]
        if (tier := self._objective(claim.objective_id).worker_tier) and role.tier != tier:
            role = dataclasses.replace(role, tier=tier)
        team, role_name, oid, sid = claim.team_id, claim.role, claim.objective_id, claim.step_id
        tool_ctx = ToolContext(oid, sid, team,
                               recall=lambda q, k: sw.recall_texts(team, q, k),
                               add_note=lambda text: sw.add_note(oid, sid, role_name, text))
        while True:
            try:
                result = await run_worker(sw.llm, role, claim.brief, sw.tools, tool_ctx,
                                          claim.ctx, sw.settings.max_tool_rounds)
                if self._lost_now(claim):
                    return await self._lost(claim)
                if result.question is not None:
                    return await self._write(
                        partial(self._wait_for_humans, claim, result.question), "step.wait")
                output = result.output or ""
                verdict = await review(sw.llm, sw.roles["critic"], claim.brief, output,
                                       claim.ctx)
            except BudgetExceeded as exc:
                return await self._write(partial(self._hold_for_budget, claim, exc),
                                         "step.budget_hold")
            except LLMError as exc:
                return await self._troubleshoot(claim, str(exc))
            if self._lost_now(claim):
                return await self._lost(claim)
            if verdict.approved:
                return await self._finish((claim, output, verdict.critique))
            if claim.rejections + 1 > sw.settings.max_revisions:
                return await self._troubleshoot(
                    claim, f"rejected by the critic {claim.rejections + 1} times: "
                           f"{verdict.critique}", output=output, critique=verdict.critique)
            critique = verdict.critique
            revised = await self._write(partial(self._revise, claim, output, critique),
                                        "step.revise")
            if isinstance(revised, StepState):
                return revised
            claim.run_id, claim.attempt = revised
            claim.ctx.run_id = claim.run_id
            claim.rejections += 1
            claim.brief.critique = critique

    def _lost_now(self, claim: Claim) -> bool:
        """Whether the claim is gone: the heartbeat found it taken, or (check_claims) the
        database says so now (the objective was cancelled in another process)."""
        if not claim.lost and self.check_claims:
            with self.swarm.db.read() as s:
                held = s.execute(_STILL_HELD, {"sid": claim.step_id,
                                               "token": claim.token}).first()
            claim.lost = held is None
        return claim.lost

    async def _lost(self, claim: Claim) -> StepState:
        log.info("step.claim_lost objective=%s step=%s", claim.objective_id, claim.step_id)
        with self.swarm.db.read() as s:
            return _state(s, claim.step_id)

    def _revise(self, claim: Claim, output: str, critique: str) -> tuple[int, int] | StepState:
        with self.swarm.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            run.output, run.approved, run.critique = output, False, critique
            set_run(run, RunState.REJECTED)
            step.attempts += 1
            nxt = StepRun(step_id=step.id, objective_id=step.objective_id, attempt=step.attempts,
                          state=RunState.RUNNING)
            s.add(nxt)
            s.flush()
            emit(s, claim.thread, StepRevised(step.objective_id, step.id, step.title,
                                              step.attempts, critique))
            after_commit(s, partial(
                self.swarm.remember_later, claim.team_id,
                f"Critic on '{step.title}': {critique}", "critique",
                claim.objective_id))
            return nxt.id, step.attempts

    async def _finish_all(self, requests: list[_Accepted]) -> list[StepState | Exception]:
        """Accepted outputs recorded in one turn of the loop: one transaction for all of them."""
        return await self._write(lambda: self._finish_tx(requests), "step.finish")

    def _finish_tx(self, requests: list[_Accepted]) -> list[StepState | Exception]:
        calls = self.swarm.calls.take()  # the critics' calls, written with their verdicts
        try:
            out = self._finish_in(requests, calls)
        except BaseException:
            self.swarm.calls.give_back(calls)
            raise
        self.swarm.calls.settle(calls)
        return out

    def _finish_in(self, requests: list[_Accepted],
                   calls: list[Taken]) -> list[StepState | Exception]:
        now = utcnow()
        out: list[StepState | Exception] = []
        events: list[tuple[ThreadRef, StepFinished]] = []
        with self.swarm.db.core() as c:
            CallBook.insert(c, calls)
            for claim, output, critique in requests:
                if not c.execute(_FINISH_STEP, {"sid": claim.step_id, "output": output,
                                                "now": now, "token": claim.token}).rowcount:
                    # cancelled or taken over meanwhile (e.g. by another process): its run was
                    # closed with it, and the others in the batch go on
                    out.append(StepState(c.execute(_STATE_OF, {"sid": claim.step_id})
                                         .scalar_one()))
                    continue
                if not c.execute(_ACCEPT_RUN, {"rid": claim.run_id, "output": output,
                                               "critique": critique, "now": now}).rowcount:
                    raise IllegalTransition(f"run {claim.run_id} of a running step is not running")
                events.append((claim.thread, StepFinished(claim.objective_id, claim.step_id,
                                                          claim.brief.title, claim.role, output)))
                out.append(StepState.FINISHED)
            for thread, event in events:
                emit(c, thread, event)
        return out

    def _fail(self, claim: Claim, error: str, output: str | None = None,
              critique: str | None = None, action: str = "step.failed") -> StepState:
        with self.swarm.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            _close_unsuccessful(run, output, critique, error)
            move_step(s, step, StepState.FAILED, claim=claim.token, error=error,
                      finished_at=utcnow())
            emit(s, claim.thread, StepFailed(step.objective_id, step.id, step.title, error))
            audit(s, "swarm", action, step.objective_id, step=step.key, error=error)
        log.info("step.failed objective=%s step=%s", claim.objective_id, claim.step_id)
        return StepState.FAILED

    # -- teams -------------------------------------------------------------------------------
    def _team_of(self, step_id: int) -> tuple[int, str, list[tuple[str, str]]] | None:
        """The team of a team step: its id, state and (once finished) its steps' outputs."""
        with self.swarm.db.read() as s:
            team = s.execute(select(Objective.id, Objective.state, Objective.plan_version)
                             .where(Objective.parent_step_id == step_id)).first()
            if team is None:
                return None
            outputs: list[tuple[str, str]] = []
            if team.state == ObjectiveState.FINISHED:
                outputs = [(title, output or "") for title, output in s.execute(
                    select(Step.title, Step.output).where(
                        Step.objective_id == team.id, Step.plan_version == team.plan_version,
                        Step.state == StepState.FINISHED).order_by(Step.position))]
            return team.id, str(team.state), outputs

    def _delegate(self, claim: Claim, start: bool) -> StepState:
        """The step waits, in the database, for its team; started here (once: the claim guards
        it, and the team's unique parent step too) unless it exists already."""
        with self.swarm.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            set_run(run, RunState.WAITING)
            move_step(s, step, StepState.WAITING_TEAM, claim=claim.token)
            if start:
                team = self.swarm.open_team(s, step)
                audit(s, "swarm", "team.started", step.objective_id, step=step.key, team=team)
        return StepState.WAITING_TEAM

    def _wait_for_humans(self, claim: Claim, question: str) -> StepState:
        with self.swarm.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            set_run(run, RunState.WAITING)
            move_step(s, step, StepState.WAITING_HUMAN, claim=claim.token)
            q = Question(objective_id=step.objective_id, step_id=step.id, text=question)
            s.add(q)
            s.flush()
            emit(s, claim.thread, QuestionAsked(step.objective_id, q.id, step.id, step.title,
                                                question))
            audit(s, "swarm", "question.asked", step.objective_id, step=step.key,
                  question=question)
        return StepState.WAITING_HUMAN

    # -- recovery: the troubleshooter, and budget holds -------------------------------------
    async def _troubleshoot(self, claim: Claim, error: str, output: str | None = None,
                            critique: str | None = None) -> StepState:
        """A step that failed after its retries: ask the troubleshooter, within the bounds."""
        sw = self.swarm

        def fail(why: str) -> Any:
            return self._write(lambda: self._fail(claim, why, output, critique), "step.fail")

        with sw.db.read() as s:
            earlier = troubleshooter.history(s, claim.step_id)
            total = troubleshooter.objective_count(s, claim.objective_id)
        per_step, per_objective = (sw.settings.max_troubleshoots_per_step,
                                   sw.settings.max_troubleshoots_per_objective)
        if "troubleshooter" not in sw.roles:
            return await fail(error)
        if len(earlier) >= per_step or total >= per_objective:
            spent = (f"{len(earlier)} of {per_step} for this step" if len(earlier) >= per_step
                     else f"{total} of {per_objective} for this objective")
            return await fail(f"{error} (no troubleshooting left: {spent} used)")
        failed = troubleshooter.FailedStep(claim.brief.goal, claim.brief.title, claim.role,
                                           claim.brief.instructions, error, output)
        try:
            decision = await troubleshooter.decide(sw.llm, sw.roles["troubleshooter"], sw.roles,
                                                   failed, earlier, claim.ctx,
                                                   max_steps=sw.settings.max_replan_steps)
        except BudgetExceeded as exc:
            return await self._write(partial(self._hold_for_budget, claim, exc),
                                     "step.budget_hold")
        except LLMError as exc:
            return await fail(f"{error}; the troubleshooter could not help: {exc}")
        if self._lost_now(claim):
            return await self._lost(claim)
        return await self._write(lambda: self._troubleshot(claim, decision, error, output,
                                                           critique, len(earlier) + 1),
                                 "step.troubleshot")

    def _troubleshot(self, claim: Claim, decision: troubleshooter.TroubleshootDecision,
                     error: str, output: str | None, critique: str | None,
                     number: int) -> StepState:
        """Apply the decision in one transaction with its event and audit entry."""
        sw = self.swarm
        with sw.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            _close_unsuccessful(run, output, critique, error)
            new_steps: list[Step] = []
            question: Question | None = None
            values: dict[str, Any] = {}
            if decision.action == "retry":
                values["instructions"] = decision.instructions
                # an approval binds to the instructions it showed: new ones are asked again
                state = StepState.PENDING if step.needs_approval else StepState.READY
            elif decision.action == "replan":
                new_steps = troubleshooter.replace_step(s, step, decision.steps, sw.roles)
                values["error"] = (f"replaced by {', '.join(st.key for st in new_steps)}: "
                                   f"{decision.reason}")
                values["finished_at"] = utcnow()
                state = StepState.REPLACED
            else:
                question = Question(objective_id=step.objective_id, step_id=step.id,
                                    text=decision.question)
                s.add(question)
                state = StepState.WAITING_HUMAN
            move_step(s, step, state, claim=claim.token, **values)
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
            if new_steps:  # the driver must load the new steps
                after_commit(s, lambda: sw.poke(claim.objective_id))
        log.info("step.troubleshot objective=%s step=%s action=%s n=%d", claim.objective_id,
                 claim.step_id, decision.action, number)
        return state

    def _hold_for_budget(self, claim: Claim, exc: BudgetExceeded) -> StepState:
        """The call was not made: the step waits (ready) and the objective pauses for approval."""
        sw = self.swarm
        with sw.db.tx() as s:
            if (owned := _owned(s, claim)) is None:
                return _state(s, claim.step_id)
            step, run = owned
            run.error = str(exc)
            set_run(run, RunState.ABANDONED)
            move_step(s, step, StepState.READY, claim=claim.token)
            obj = s.get(Objective, step.objective_id)
            assert obj is not None
            sw.hold_for_budget(s, obj, exc)
            # the driver must see the pause before it restarts the step
            after_commit(s, lambda: sw.poke(claim.objective_id))
        return StepState.READY

    # -- leases ------------------------------------------------------------------------------
    def _keep_alive(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Renew the leases of the steps this process runs, a third of a lease apart; a claim
        that is gone (taken over after a stall, cancelled elsewhere) is marked lost."""
        lease_s = self.swarm.settings.lease_s
        while self._held:
            await asyncio.sleep(lease_s / 3)
            if not (claims := dict(self._held)):
                return
            try:
                with self.swarm.db.core(wake=False) as c:
                    kept = leases.renew(c, {sid: cl.token for sid, cl in claims.items()},
                                        leases.expiry(lease_s))
            except Exception as exc:  # the database is away: the next beat tries again
                log.warning("lease.renew_failed steps=%d error=%s", len(claims),
                            type(exc).__name__)
                continue
            for sid, claim in claims.items():
                if sid not in kept:
                    claim.lost = True

    def release_all(self) -> None:
        """Shutdown: hand back the steps this process still runs, so another process (or the
        next start) takes them over at once instead of waiting out the lease."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if not self._held:
            return
        now = utcnow()
        try:
            with self.swarm.db.core() as c:
                for claim in self._held.values():
                    if c.execute(_RELEASE, {"sid": claim.step_id, "token": claim.token}).rowcount:
                        c.execute(_ABANDON_RUN, {"rid": claim.run_id, "now": now})
        except Exception as exc:  # their leases expire by themselves
            log.warning("lease.release_failed steps=%d error=%s", len(self._held),
                        type(exc).__name__)
        self._held.clear()
