"""The swarm's entry points: the neutral contract the chat adapters call."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from swarm.audit import audit
from swarm.budget import Budget, BudgetExceeded
from swarm.config import Settings
from swarm.db import Database
from swarm.engine import Engine, Executor
from swarm.events import (
    ApprovalDecided,
    ApprovalRequested,
    CallRetried,
    Notice,
    ObjectiveAccepted,
    ObjectiveFinished,
    ObjectiveStateChanged,
    PlannedStep,
    PlanProposed,
    StepResult,
)
from swarm.llm import LLM, CallContext, LLMError, Recovery
from swarm.models import (
    Approval,
    InboundEvent,
    Note,
    Objective,
    Question,
    Step,
    StepRun,
    ThreadRef,
    utcnow,
)
from swarm.outbox import emit
from swarm.planner import PlanError, PlanSpec, make_plan
from swarm.redact import redact
from swarm.roles import Role, load_roles
from swarm.states import (
    TERMINAL_OBJECTIVE,
    ApprovalState,
    ObjectiveState,
    RunState,
    StepState,
    check_transition,
)
from swarm.tools import ToolRegistry, default_tools
from swarm.views import ObjectiveView, objective_view

log = logging.getLogger(__name__)


class Memory(Protocol):
    """What the swarm needs of team memory (memory.TeamMemory provides it)."""

    async def remember(self, team: str, text: str, *, kind: str, objective_id: int | None = None,
                       author: str | None = None, meta: dict | None = None) -> int: ...

    async def recall(self, team: str, query: str, k: int = 5) -> list[Any]: ...


Planner = Callable[[str, list[str], CallContext], Awaitable[PlanSpec]]


class UserError(ValueError):
    """Something a user asked that cannot be done; the message says why, for the thread."""


@dataclass(frozen=True)
class Started:
    objective_id: int
    duplicate: bool


@dataclass(frozen=True)
class Decision:
    ok: bool
    message: str


def set_objective(obj: Objective, state: ObjectiveState, reason: str | None = None) -> None:
    check_transition(ObjectiveState(obj.state), state)
    obj.state = state
    obj.state_reason = reason
    if state in TERMINAL_OBJECTIVE:
        obj.finished_at = utcnow()


class Swarm:
    def __init__(self, settings: Settings, db: Database, llm: LLM | None = None,
                 memory: Memory | None = None, roles: dict[str, Role] | None = None,
                 tools: ToolRegistry | None = None, executor: Executor | None = None,
                 planner: Planner | None = None) -> None:
        self.settings, self.db = settings, db
        self.planner = planner or self._manager_plan
        self.budget = Budget(settings, db)
        self.llm = llm or LLM(settings, self.budget)
        self.llm.on_recovery = self._show_recovery
        self.memory = memory
        self.roles = roles or load_roles(settings.roles_file)
        self.tools = tools or default_tools()
        self.engine = Engine(self, executor)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- background work -------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> bool:
        return bool(self._tasks) or self.engine.busy

    async def join(self) -> None:
        """Wait until planning, steps and memory writes have all come to rest."""
        while self._tasks or self.engine.busy:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.engine.join()

    async def shutdown(self) -> None:
        await self.engine.shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.llm.close()

    # -- memory ------------------------------------------------------------------------------
    async def recall_texts(self, team: str, query: str, k: int) -> list[str]:
        if self.memory is None:
            return []
        return [m.text for m in await self.memory.recall(team, query, k)]

    def remember_later(self, team: str, text: str, kind: str, objective_id: int | None,
                       author: str | None = None) -> None:
        if self.memory is not None:
            self._spawn(self._remember(team, redact(text), kind, objective_id, author))

    async def _remember(self, team: str, text: str, kind: str, objective_id: int | None,
                        author: str | None) -> None:
        try:
            assert self.memory is not None
            await self.memory.remember(team, text, kind=kind, objective_id=objective_id,
                                       author=author)
        except Exception:
            log.exception("memory.remember_failed kind=%s objective=%s", kind, objective_id)

    async def add_note(self, objective_id: int, step_id: int, author: str, text: str) -> None:
        with self.db.tx() as s:
            s.add(Note(objective_id=objective_id, step_id=step_id, author=author,
                       text=redact(text)))

    # -- the neutral contract: in ----------------------------------------------------------
    async def start_objective(self, goal: str, thread: ThreadRef, requester: str,
                              event_key: str) -> Started:
        goal = redact(goal.strip())  # a secret in a goal would reach models, chat and memory
        if not goal:
            raise UserError("Tell me a goal, e.g. “@threadswarm launch our SaaS in Japan”.")
        with self.db.read() as s:
            seen = s.scalar(select(InboundEvent.objective_id)
                            .where(InboundEvent.event_key == event_key))
        if seen is not None:
            return Started(seen, duplicate=True)
        try:
            with self.db.tx() as s:
                obj = Objective(goal=goal, platform=thread.platform, team_id=thread.team_id,
                                channel_id=thread.channel_id, thread_id=thread.thread_id,
                                requester=requester, state=ObjectiveState.PLANNING)
                s.add(obj)
                s.flush()
                s.add(InboundEvent(event_key=event_key, objective_id=obj.id))
                emit(s, thread, ObjectiveAccepted(obj.id, goal, requester))
                audit(s, requester, "objective.created", obj.id, goal=goal)
        except IntegrityError:  # the same delivery raced in: it already has its objective
            with self.db.read() as s:
                seen = s.scalar(select(InboundEvent.objective_id)
                                .where(InboundEvent.event_key == event_key))
            return Started(int(seen or 0), duplicate=True)
        self.remember_later(thread.team_id, f"Goal set by {requester}: {goal}", "goal", obj.id,
                            requester)
        self._spawn(self._plan(obj.id))
        return Started(obj.id, duplicate=False)

    async def _plan(self, objective_id: int) -> None:
        with self.db.read() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            goal, team = obj.goal, obj.team_id
        memories = await self.recall_texts(team, goal, self.settings.recall_k)
        ctx = CallContext(objective_id, None, team)
        try:
            plan = await self.planner(goal, memories, ctx)
        except BudgetExceeded as exc:
            with self.db.tx() as s:
                s.add_all(ctx.calls)
                obj = s.get(Objective, objective_id)
                assert obj is not None
                if obj.state == ObjectiveState.PLANNING:
                    self.hold_for_budget(s, obj, exc)
            return
        except (PlanError, LLMError) as exc:
            with self.db.tx() as s:
                s.add_all(ctx.calls)
                obj = s.get(Objective, objective_id)
                assert obj is not None
                set_objective(obj, ObjectiveState.FAILED, str(exc))
                emit(s, obj.thread, Notice(obj.id, f"I could not plan this: {exc}"))
                emit(s, obj.thread, ObjectiveFinished(obj.id, obj.state, str(exc)))
                audit(s, "manager", "plan.failed", obj.id, error=str(exc))
            return
        with self.db.tx() as s:
            s.add_all(ctx.calls)
            obj = s.get(Objective, objective_id)
            assert obj is not None
            if obj.state != ObjectiveState.PLANNING:
                return  # cancelled while the manager was thinking
            obj.plan_version += 1
            steps = [Step(objective_id=obj.id, plan_version=obj.plan_version, key=spec.key,
                          position=i, title=spec.title, role=spec.role,
                          instructions=spec.instructions, depends_on=list(spec.depends_on),
                          needs_approval=spec.needs_approval or self.roles[spec.role].risky,
                          state=StepState.PENDING) for i, spec in enumerate(plan.steps)]
            s.add_all(steps)
            approval = Approval(objective_id=obj.id, kind="plan", state=ApprovalState.PENDING,
                                title=f"Plan for: {goal}")
            s.add(approval)
            s.flush()
            set_objective(obj, ObjectiveState.AWAITING_APPROVAL)
            emit(s, obj.thread, PlanProposed(
                obj.id, approval.id, obj.plan_version, plan.rationale,
                [PlannedStep(st.id, st.key, st.title, st.role, st.depends_on, st.needs_approval)
                 for st in steps]))
            audit(s, "manager", "plan.proposed", obj.id, version=obj.plan_version,
                  steps=[st.key for st in steps])

    async def _manager_plan(self, goal: str, memories: list[str], ctx: CallContext) -> PlanSpec:
        return await make_plan(self.llm, goal, self.roles, memories, ctx,
                               max_steps=self.settings.max_plan_steps,
                               repair_attempts=self.settings.plan_repair_attempts)

    def may_approve(self, obj: Objective | ObjectiveView, user: str) -> bool:
        return user == obj.requester or user in self.settings.approvers \
            or "*" in self.settings.approvers

    async def decide(self, approval_id: int, user: str, approve: bool,
                     reason: str | None = None) -> Decision:
        with self.db.tx() as s:
            approval = s.get(Approval, approval_id)
            if approval is None:
                return Decision(False, f"There is no approval #{approval_id}.")
            obj = s.get(Objective, approval.objective_id)
            assert obj is not None
            if approval.state != ApprovalState.PENDING:
                return Decision(False, f"Already {approval.state} by {approval.decided_by}.")
            if not self.may_approve(obj, user):
                audit(s, user, "approval.refused", obj.id, approval=approval.id)
                return Decision(False, "Only the requester or a configured approver can "
                                       "decide this.")
            if obj.state in TERMINAL_OBJECTIVE:
                return Decision(False, f"This objective is already {obj.state}.")
            approval.state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
            now = utcnow()
            approval.decided_by, approval.decided_at, approval.reason = user, now, reason
            emit(s, obj.thread, ApprovalDecided(obj.id, approval.id, approval.kind,
                                                approval.title, approve, user, reason,
                                                now.isoformat()))
            audit(s, user, "approval.decided", obj.id, approval=approval.id, kind=approval.kind,
                  approved=approve, reason=reason)
            self._apply_decision(s, obj, approval, approve, user)
            team, title, oid = obj.team_id, approval.title, obj.id
        verb = "approved" if approve else "rejected"
        self.remember_later(team, f"{user} {verb}: {title}" + (f" ({reason})" if reason else ""),
                            "decision", oid, user)
        self.engine.poke(oid)
        return Decision(True, f"{verb.capitalize()} by {user}.")

    def _apply_decision(self, s: Any, obj: Objective, approval: Approval, approve: bool,
                        user: str) -> None:
        if approval.kind == "plan":
            if approve:
                set_objective(obj, ObjectiveState.RUNNING)
                if self.memory is not None:
                    plan = "; ".join(f"{key} {role}: {title}" for key, role, title in s.execute(
                        select(Step.key, Step.role, Step.title).where(
                            Step.objective_id == obj.id, Step.plan_version == obj.plan_version)))
                    self.remember_later(obj.team_id, f"Approved plan for '{obj.goal}': {plan}",
                                        "plan", obj.id, user)
            else:
                self._end(s, obj, ObjectiveState.CANCELLED, f"The plan was rejected by {user}.")
        elif approval.kind == "budget":
            self._decide_budget(s, obj, approval, approve, user)
        elif approval.kind == "step" and approval.step_id is not None:
            step = s.get(Step, approval.step_id)
            check_transition(StepState(step.state),
                             StepState.READY if approve else StepState.SKIPPED)
            step.state = StepState.READY if approve else StepState.SKIPPED
            if not approve:
                step.error = f"rejected by {user}"

    async def reply(self, thread: ThreadRef, user: str, text: str,
                    event_key: str | None = None) -> bool:
        """A human's message in a thread: the answer to the oldest open question, if any. A
        message that answered once (its platform delivery id, `event_key`, is kept with the
        answer) answers nothing when the platform delivers it again, even after a restart."""
        try:
            oid = self._answer(thread, user, text, event_key)
        except IntegrityError:  # the same delivery raced in and answered first
            return False
        if oid is None:
            return False
        self.engine.poke(oid)
        return True

    def _answer(self, thread: ThreadRef, user: str, text: str,
                event_key: str | None) -> int | None:
        with self.db.tx() as s:
            if event_key is not None and s.scalar(
                    select(InboundEvent.id).where(InboundEvent.event_key == event_key)):
                return None
            q = s.scalars(select(Question).join(Objective, Objective.id == Question.objective_id)
                          .where(Objective.platform == thread.platform,
                                 Objective.team_id == thread.team_id,
                                 Objective.channel_id == thread.channel_id,
                                 Objective.thread_id == thread.thread_id,
                                 Question.answer.is_(None)).order_by(Question.id)).first()
            if q is None:
                return None
            q.answer, q.answered_by, q.answered_at = redact(text), user, utcnow()
            step = s.get(Step, q.step_id)
            assert step is not None
            if step.state == StepState.WAITING_HUMAN:
                step.state = StepState.READY
            audit(s, user, "question.answered", q.objective_id, question=q.id)
            oid = q.objective_id
            if event_key is not None:
                s.add(InboundEvent(event_key=event_key, objective_id=oid))
        return oid

    async def cancel(self, objective_id: int, user: str) -> Decision:
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id)
            if obj is None:
                return Decision(False, f"There is no objective #{objective_id}.")
            if obj.state in TERMINAL_OBJECTIVE:
                return Decision(False, f"Objective #{objective_id} is already {obj.state}.")
            self._end(s, obj, ObjectiveState.CANCELLED, f"Cancelled by {user}.")
            audit(s, user, "objective.cancelled", obj.id)
        self.engine.cancel(objective_id)
        return Decision(True, f"Objective #{objective_id} cancelled.")

    async def pause(self, objective_id: int, user: str) -> Decision:
        return self._pause_or_resume(objective_id, user, ObjectiveState.PAUSED)

    async def resume(self, objective_id: int, user: str) -> Decision:
        return self._pause_or_resume(objective_id, user, ObjectiveState.RUNNING)

    def _pause_or_resume(self, objective_id: int, user: str, to: ObjectiveState) -> Decision:
        want = ObjectiveState.RUNNING if to == ObjectiveState.PAUSED else ObjectiveState.PAUSED
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id)
            if obj is None:
                return Decision(False, f"There is no objective #{objective_id}.")
            if obj.state != want:
                return Decision(False, f"Objective #{objective_id} is {obj.state}, not {want}.")
            if to == ObjectiveState.RUNNING and obj.plan_version == 0:
                to = ObjectiveState.PLANNING  # it was paused (for budget) while planning
                self._spawn(self._plan(objective_id))
            set_objective(obj, to, f"{'Paused' if to == ObjectiveState.PAUSED else 'Resumed'} "
                                   f"by {user}.")
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, to, user, obj.state_reason))
            audit(s, user, f"objective.{'paused' if to == ObjectiveState.PAUSED else 'resumed'}",
                  obj.id)
        self.engine.poke(objective_id)
        return Decision(True, f"Objective #{objective_id} {to}.")

    # -- budgets and recovery ---------------------------------------------------------------
    def hold_for_budget(self, s: Any, obj: Objective, exc: BudgetExceeded) -> None:
        """Pause `obj` before a call that would pass a ceiling and ask to raise it (once)."""
        if obj.state not in (ObjectiveState.RUNNING, ObjectiveState.PLANNING):
            return  # already paused, or ended, meanwhile
        resume_to = obj.state
        set_objective(obj, ObjectiveState.PAUSED, f"Paused at its budget: {exc}.")
        emit(s, obj.thread, ObjectiveStateChanged(obj.id, ObjectiveState.PAUSED, "budget",
                                                  obj.state_reason))
        waiting = s.scalar(select(Approval.id).where(Approval.objective_id == obj.id,
                                                     Approval.kind == "budget",
                                                     Approval.state == ApprovalState.PENDING))
        if waiting is None:
            approval = Approval(objective_id=obj.id, kind="budget", state=ApprovalState.PENDING,
                                title="")
            s.add(approval)
            s.flush()
            proposed = self.budget.request_raise(s, exc, obj.id, approval.id, resume_to)
            approval.title = (f"Raise the budget of {exc.label} from {exc.ceiling.show()} to "
                              f"{proposed.show()} ({exc.used.show()} spent or in flight; the "
                              f"next call needs about {exc.estimate.show()})")
            emit(s, obj.thread, ApprovalRequested(obj.id, approval.id, "budget", approval.title))
        audit(s, "budget", "budget.exceeded", obj.id, scope=exc.scope, key=exc.key,
              ceiling_usd=exc.ceiling.usd, ceiling_tokens=exc.ceiling.tokens,
              used_usd=exc.used.usd, used_tokens=exc.used.tokens,
              estimate_usd=exc.estimate.usd, estimate_tokens=exc.estimate.tokens)
        log.info("objective.paused_for_budget objective=%s key=%s", obj.id, exc.key)

    def _decide_budget(self, s: Any, obj: Objective, approval: Approval, approve: bool,
                       user: str) -> None:
        if not approve:
            self._end(s, obj, ObjectiveState.CANCELLED,
                      f"Stopped at its budget: {user} did not approve raising it.")
            self.engine.cancel(obj.id)  # a parallel step may still be in flight
            return
        request = self.budget.apply_raise(s, approval.id)
        if obj.state == ObjectiveState.PAUSED:
            to = ObjectiveState(request.resume_to) if request else ObjectiveState.RUNNING
            set_objective(obj, to, f"Budget raised by {user}.")
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, to, user, obj.state_reason))
            if to == ObjectiveState.PLANNING:
                self._spawn(self._plan(obj.id))

    def _show_recovery(self, ctx: CallContext, recovery: Recovery) -> None:
        """A retry, a fallback or a re-ask, shown live in the objective's thread."""
        if ctx.objective_id is None:
            return
        with self.db.tx() as s:
            obj = s.get(Objective, ctx.objective_id)
            if obj is None:
                return
            emit(s, obj.thread, CallRetried(obj.id, ctx.step_id, recovery.tier, recovery.model,
                                            recovery.problem, recovery.action,
                                            recovery.next_model))

    def _end(self, s: Any, obj: Objective, state: ObjectiveState, summary: str) -> None:
        s.execute(update(Step).where(Step.objective_id == obj.id,
                                     Step.state.not_in([st.value for st in (
                                         StepState.FINISHED, StepState.FAILED,
                                         StepState.SKIPPED, StepState.REPLACED)]))
                  .values(state=StepState.CANCELLED))
        s.execute(update(StepRun).where(StepRun.objective_id == obj.id,
                                        StepRun.state == RunState.RUNNING)
                  .values(state=RunState.ABANDONED, finished_at=utcnow()))
        set_objective(obj, state, summary)
        obj.summary = summary
        view = objective_view(s, obj)
        emit(s, obj.thread, ObjectiveFinished(obj.id, state, summary, [], view.tokens, view.cost))

    def finish_objective(self, objective_id: int) -> None:
        """Called by the engine when every step has come to an end."""
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            if obj.state != ObjectiveState.RUNNING:
                return
            view = objective_view(s, obj)
            failed = [st for st in view.steps if st.state == StepState.FAILED]
            state = ObjectiveState.FAILED if failed else ObjectiveState.FINISHED
            done = sum(st.state == StepState.FINISHED for st in view.steps)
            summary = (f"{done} of {len(view.steps)} steps finished"
                       + (f"; failed: {', '.join(st.title for st in failed)}" if failed else "")
                       + f". {view.tokens} tokens, ${view.cost:.4f}.")
            set_objective(obj, state, summary)
            obj.summary = summary
            results = [StepResult(st.title, st.role, st.state, st.output or st.error or "")
                       for st in view.steps]
            emit(s, obj.thread, ObjectiveFinished(obj.id, state, summary, results, view.tokens,
                                                  view.cost))
            audit(s, "swarm", f"objective.{state}", obj.id, summary=summary)
            team, goal = obj.team_id, obj.goal
        self.remember_later(team, f"Objective '{goal}' {state}: {summary}", "outcome",
                            objective_id)

    # -- start-up ----------------------------------------------------------------------------
    async def recover(self) -> list[int]:
        """Resume every non-terminal objective; a step cut off by a crash runs again."""
        with self.db.tx() as s:
            live = s.scalars(select(Objective).where(
                Objective.state.not_in([st.value for st in TERMINAL_OBJECTIVE]))).all()
            ids = [o.id for o in live]
            if ids:
                s.execute(update(StepRun).where(StepRun.objective_id.in_(ids),
                                                StepRun.state == RunState.RUNNING)
                          .values(state=RunState.ABANDONED, finished_at=utcnow()))
                s.execute(update(Step).where(Step.objective_id.in_(ids),
                                             Step.state == StepState.RUNNING)
                          .values(state=StepState.READY))
            planning = [o.id for o in live if o.state == ObjectiveState.PLANNING]
            running = [o.id for o in live if o.state == ObjectiveState.RUNNING]
            for o in live:
                audit(s, "swarm", "objective.recovered", o.id, state=o.state)
        for oid in planning:
            self._spawn(self._plan(oid))
        for oid in running:
            self.engine.poke(oid)
        return ids

    # -- reading -----------------------------------------------------------------------------
    def view(self, objective_id: int) -> ObjectiveView | None:
        with self.db.read() as s:
            obj = s.get(Objective, objective_id)
            return objective_view(s, obj) if obj else None

    def objectives(self, *, team_id: str | None = None, active_only: bool = False,
                   limit: int = 20) -> list[ObjectiveView]:
        with self.db.read() as s:
            q = select(Objective).order_by(Objective.id.desc()).limit(limit)
            if team_id is not None:
                q = q.where(Objective.team_id == team_id)
            if active_only:
                q = q.where(Objective.state.not_in([st.value for st in TERMINAL_OBJECTIVE]))
            return [objective_view(s, o) for o in s.scalars(q)]

    def pending_approvals(self, objective_id: int) -> list[Approval]:
        with self.db.read() as s:
            return list(s.scalars(select(Approval).where(
                Approval.objective_id == objective_id,
                Approval.state == ApprovalState.PENDING).order_by(Approval.id)))

    def open_questions(self, objective_id: int) -> list[Question]:
        with self.db.read() as s:
            return list(s.scalars(select(Question).where(
                Question.objective_id == objective_id, Question.answer.is_(None))))
