"""The swarm's entry points: the neutral contract the chat adapters call."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from swarm.agents.grounding import Constraints
from swarm.agents.planner import PlanError, PlanLimits, PlanSpec, limit_errors, make_plan
from swarm.agents.roles import Role, binding, load_roles, needs_approval
from swarm.agents.tools import ToolRegistry, default_tools
from swarm.config import Settings
from swarm.contract import Actor, Decision, Principal, Started, ThreadRef, UserError, valid_id
from swarm.engine import leases
from swarm.engine.attempt import StepServices
from swarm.engine.driver import Driver, Executor
from swarm.events import (
    ApprovalDecided,
    ApprovalRequested,
    CallRetried,
    ConstraintVerdict,
    DriftDetected,
    Notice,
    ObjectiveAccepted,
    ObjectiveFinished,
    ObjectiveStateChanged,
    PictureRequested,
    PlannedStep,
    PlanProposed,
    StepFailed,
    StepResult,
    TeamStarted,
)
from swarm.llm import prices
from swarm.llm.budget import Budget, BudgetExceeded
from swarm.llm.calls import CallBook
from swarm.llm.client import LLM, CallContext, LLMError, Recovery
from swarm.redact import configure as configure_redaction
from swarm.redact import install_log_redaction, redact
from swarm.services.policy import Policy, as_principal, refusal
from swarm.services.team import TeamAdmin
from swarm.states import TERMINAL_OBJECTIVE, ApprovalState, ObjectiveState, RunState, StepState
from swarm.store.audit import audit
from swarm.store.db import Database, after_commit
from swarm.store.guards import changed, decide_approval, move_objective, move_step
from swarm.store.models import (
    Approval,
    GroundingCheck,
    InboundEvent,
    Note,
    Objective,
    ObjectiveConstraints,
    Question,
    Step,
    StepRun,
    utcnow,
)
from swarm.store.outbox import emit
from swarm.store.tree import subtree
from swarm.store.views import ObjectiveView, objective_view

log = logging.getLogger(__name__)


class Memory(Protocol):
    """What the swarm needs of team memory (memory.TeamMemory provides it)."""

    async def remember(self, team: str, text: str, *, kind: str, objective_id: int | None = None,
                       author: str | None = None, meta: dict | None = None) -> int: ...

    async def recall(self, team: str, query: str, k: int = 5) -> list[Any]: ...

    async def forget(self, team: str, memory_id: int) -> bool: ...

    def list(self, team: str, *, kind: str | None = None, limit: int = 50) -> list[Any]: ...


class Planner(Protocol):
    """goal, recalled memories, call context -> plan. After a rejection with feedback it is
    called with `feedback=` too (so a planner hook that never sees one needs no such argument)."""

    def __call__(self, goal: str, memories: list[str], ctx: CallContext, /,
                 **feedback: str) -> Awaitable[PlanSpec]: ...


class _Refused(Exception):
    """A decision that lost a race or no longer applies: the transaction rolls back and the user
    is told `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _report_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("swarm.background_task_failed task=%s error=%s", task.get_name(),
                  type(exc).__name__, exc_info=exc)


class Swarm:
    def __init__(self, settings: Settings, db: Database, llm: LLM | None = None,
                 memory: Memory | None = None, roles: dict[str, Role] | None = None,
                 tools: ToolRegistry | None = None, executor: Executor | None = None,
                 planner: Planner | None = None) -> None:
        self.settings, self.db = settings, db
        configure_redaction(settings.redact_patterns)
        install_log_redaction()
        self.policy = Policy(settings)
        self.planner = planner or self._manager_plan
        self.budget = Budget(settings, db)
        self.llm = llm or LLM(settings, self.budget)
        self.llm.on_recovery = self._show_recovery
        self.calls = CallBook(db)
        self.llm.book = self.calls
        self.memory = memory
        self.roles = roles or load_roles(settings.roles_file)
        prices.warn_tool_prefixes({t: c.models for t, c in self.llm.chains.items()},
                                  {r.tier for r in self.roles.values() if r.tools})
        self.tools = tools or default_tools()
        self.engine = Driver(StepServices(db, settings, self.llm, self.roles, self.tools,
                                          self.recall_texts, self.add_note, self.remember_later,
                                          self.hold_for_budget, self.calls,
                                          open_team=self._open_team),
                             self.finish_objective, executor)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.team = TeamAdmin(settings, db, self.policy, self.budget, lambda: self.memory)
        self._roots: dict[int, int] = {}  # objective id -> the root of its tree (never changes)

    # -- background work -------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_report_failure)

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
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)
        try:  # the calls made so far are booked before the database closes
            await asyncio.wait_for(self.calls.drain(), 10.0)
        except TimeoutError:
            log.warning("swarm.shutdown_calls_unbooked")
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
        """Plan the objective; any failure, expected or not, ends it visibly."""
        try:
            await self._plan_or_fail(objective_id)
        except Exception as exc:
            log.exception("plan.crashed objective=%s", objective_id)
            error = f"internal error while planning: {type(exc).__name__}"
            await self.db.retrying(lambda: self._plan_failed(objective_id, error), "plan.failed")

    async def _plan_or_fail(self, objective_id: int) -> None:
        with self.db.read() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            goal, team = obj.goal, obj.team_id
            feedback = _feedback(s, obj)
            context = _team_context(s, obj)
        memories = context + await self.recall_texts(team, goal, self.settings.recall_k)
        ctx = CallContext(objective_id, None, team)
        try:
            plan = await self.planner(goal, memories, ctx,
                                      **({"feedback": feedback} if feedback else {}))
        except BudgetExceeded as exc:
            budget_exc = exc

            def hold() -> None:
                with self.db.tx() as s:
                    obj = s.get(Objective, objective_id, with_for_update=True)
                    assert obj is not None
                    if obj.state == ObjectiveState.PLANNING:
                        self.hold_for_budget(s, obj, budget_exc)
            await self.db.retrying(hold, "plan.budget_hold")
            return
        except (PlanError, LLMError) as exc:
            error = str(exc)
            await self.db.retrying(lambda: self._plan_failed(objective_id, error), "plan.failed")
            return
        await self.db.retrying(lambda: self._propose(objective_id, goal, plan), "plan.propose")

    def _plan_failed(self, objective_id: int, error: str) -> None:
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            self._fail_planning(s, obj, error)

    def _fail_planning(self, s: Session, obj: Objective, error: str) -> None:
        if not move_objective(s, obj, ObjectiveState.FAILED, error,
                              only_from=[ObjectiveState.PLANNING]):
            return  # cancelled (or planned elsewhere) meanwhile
        emit(s, obj.thread, Notice(obj.id, f"I could not plan this: {error}"))
        emit(s, obj.thread, ObjectiveFinished(obj.id, obj.state, error))
        audit(s, "manager", "plan.failed", obj.id, error=error)
        self._report_to_parent(s, obj)

    def _propose(self, objective_id: int, goal: str, plan: PlanSpec) -> None:
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            # the tree's bounds hold for a custom planner's plan too
            if errors := limit_errors(plan, self.plan_limits(s, obj), own_bound=False):
                self._fail_planning(s, obj, "; ".join(errors))
                return
            version = obj.plan_version + 1
            # a team's plan runs at once: its step was approved with its parent's plan
            to = ObjectiveState.RUNNING if obj.parent_id else ObjectiveState.AWAITING_APPROVAL
            # guarded: cancelled while the manager was thinking, or planned by another process
            if not move_objective(s, obj, to, only_from=[ObjectiveState.PLANNING],
                                  plan_version=version):
                return
            steps = [Step(objective_id=obj.id, plan_version=version, key=spec.key,
                          position=i, title=spec.title, role=spec.role,
                          instructions=spec.instructions, depends_on=list(spec.depends_on),
                          needs_approval=needs_approval(self.roles, spec.role,
                                                        spec.needs_approval),
                          team=spec.team, state=StepState.PENDING)
                     for i, spec in enumerate(plan.steps)]
            s.add_all(steps)
            if obj.parent_id:
                # a team: no approval (its step was approved with its parent's plan) and no
                # constraints of its own (its parent's grounding checks cover the whole tree)
                s.flush()
                emit(s, obj.thread, Notice(obj.id, f"Team #{obj.id} (for objective "
                                                   f"#{obj.parent_id}) plans: " + "; ".join(
                                                       f"{st.key} {st.role}: {st.title}"
                                                       for st in steps)))
                audit(s, "manager", "plan.proposed", obj.id, version=version,
                      steps=[st.key for st in steps], team_of=obj.parent_id)
                parent = s.get(Objective, obj.parent_id)
                if parent is not None and parent.state == ObjectiveState.PAUSED:
                    # paused while its team was planning: the team waits with it
                    move_objective(s, obj, ObjectiveState.PAUSED,
                                   f"Paused with objective #{parent.id}.",
                                   only_from=[ObjectiveState.RUNNING])
                oid = obj.id
                after_commit(s, lambda: self.engine.poke(oid))
                return
            data = plan.constraints.model_dump()
            if (kept := s.scalar(select(ObjectiveConstraints)
                                 .where(ObjectiveConstraints.objective_id == obj.id))) is None:
                s.add(ObjectiveConstraints(objective_id=obj.id, data=data))
            else:  # planned again: the new reading replaces the old
                kept.data = data
            s.flush()
            self._ask_plan(s, obj, goal, plan.rationale, steps, plan.constraints)
            audit(s, "manager", "plan.proposed", obj.id, version=version,
                  steps=[st.key for st in steps], constraints=data)

    def _ask_plan(self, s: Session, obj: Objective, goal: str, rationale: str,
                  steps: list[Step], constraints: Constraints) -> None:
        """The plan approval, with the plan and its constraints shown to the humans."""
        approval = Approval(objective_id=obj.id, kind="plan", state=ApprovalState.PENDING,
                            title=f"Plan v{obj.plan_version} for: {goal}",
                            binding=plan_binding(obj.plan_version), expires_at=self._expiry())
        s.add(approval)
        s.flush()
        emit(s, obj.thread, PlanProposed(
            obj.id, approval.id, obj.plan_version, rationale,
            [PlannedStep(st.id, st.key, st.title, st.role, st.depends_on, st.needs_approval,
                         st.team) for st in steps], constraints.lines()))

    def _ask_plan_again(self, s: Session, obj: Objective) -> None:
        """Its plan approval expired and an admin resumed it: the same plan is asked again."""
        steps = list(s.scalars(select(Step).where(Step.objective_id == obj.id,
                                                  Step.plan_version == obj.plan_version)
                               .order_by(Step.position)))
        self._ask_plan(s, obj, obj.goal, "Asked again: the first approval expired.", steps,
                       constraints_of(s, obj.id))

    async def _manager_plan(self, goal: str, memories: list[str], ctx: CallContext,
                            feedback: str | None = None) -> PlanSpec:
        limits = PlanLimits(self.settings.max_plan_steps)
        if ctx.objective_id is not None:
            with self.db.read() as s:
                if (obj := s.get(Objective, ctx.objective_id)) is not None:
                    limits = self.plan_limits(s, obj)
        if limits.steps < 1:
            raise PlanError(limit_errors(PlanSpec(rationale="", steps=[]), limits)[0])
        return await make_plan(self.llm, goal, self.roles, memories, ctx, max_steps=limits,
                               repair_attempts=self.settings.plan_repair_attempts,
                               feedback=feedback)

    def plan_limits(self, s: Session, obj: Objective) -> PlanLimits:
        """What `obj` may plan: teams only above THREADSWARM_MAX_DEPTH, and a team no more
        steps than its tree has left of THREADSWARM_MAX_TREE_STEPS."""
        st = self.settings
        left = None
        if obj.parent_id is not None:
            tree = obj.root_id or obj.parent_id
            used = s.scalar(select(func.count(Step.id)).join(
                Objective, Objective.id == Step.objective_id).where(
                or_(Objective.id == tree, Objective.root_id == tree), Objective.id != obj.id))
            left = st.max_tree_steps - int(used or 0)
        return PlanLimits(st.max_plan_steps, teams=obj.depth < st.max_depth, tree_left=left,
                          max_tree_steps=st.max_tree_steps, max_depth=st.max_depth)

    # -- teams: a step done by a child objective, in the same thread --------------------------
    def _open_team(self, s: Session, step: Step) -> int:
        """Start the team of `step` in the step's own transaction (StepRunner._delegate): a
        child objective that plans the step's instructions, with its share of the budget."""
        parent = s.get(Objective, step.objective_id)
        assert parent is not None
        team = Objective(goal=redact(step.instructions), platform=parent.platform,
                         team_id=parent.team_id, channel_id=parent.channel_id,
                         thread_id=parent.thread_id, requester=parent.requester,
                         state=ObjectiveState.PLANNING, parent_id=parent.id,
                         parent_step_id=step.id, root_id=parent.root_id or parent.id,
                         depth=parent.depth + 1)
        s.add(team)
        s.flush()
        carved = self.budget.carve(s, parent.id, team.id, parent.team_id)
        emit(s, parent.thread, TeamStarted(parent.id, step.id, step.title, team.id))
        audit(s, "manager", "objective.created", team.id, goal=team.goal, parent=parent.id,
              step=step.key, budget=None if carved is None else carved.show())
        tid = team.id
        after_commit(s, lambda: self._spawn(self._plan(tid)))
        return tid

    def _report_to_parent(self, s: Session, obj: Objective) -> None:
        """A team came to an end: its step sums up its results (finished), or fails."""
        if obj.parent_step_id is None or obj.parent_id is None:
            return
        step = s.get(Step, obj.parent_step_id)
        assert step is not None
        if obj.state == ObjectiveState.FINISHED:
            moved = move_step(s, step, StepState.READY, only_from=[StepState.WAITING_TEAM])
        else:
            error = f"its team #{obj.id} {obj.state}: {obj.state_reason or ''}".rstrip(": ")
            moved = move_step(s, step, StepState.FAILED, only_from=[StepState.WAITING_TEAM],
                              error=error, finished_at=utcnow())
            if moved:
                emit(s, obj.thread, StepFailed(obj.parent_id, step.id, step.title, error))
        if moved:
            parent = obj.parent_id
            after_commit(s, lambda: self.engine.poke(parent))

    def _teams(self, s: Session, obj: Objective, states: list[ObjectiveState]) -> list[Objective]:
        """The teams below `obj` (children first, then theirs) that are in one of `states`."""
        found: list[Objective] = []
        frontier = [obj.id]
        while frontier:
            below = list(s.scalars(select(Objective).where(Objective.parent_id.in_(frontier))
                                   .order_by(Objective.id)))
            found += [o for o in below if o.state in states]
            frontier = [o.id for o in below]
        return found

    def root_of(self, objective_id: int) -> int:
        """The root of the objective's tree of teams (itself, for most): where its progress
        shows."""
        if (root := self._roots.get(objective_id)) is None:
            with self.db.read() as s:
                root = s.scalar(select(Objective.root_id).where(Objective.id == objective_id))
            root = root or objective_id
            if len(self._roots) >= 4096:
                self._roots.pop(next(iter(self._roots)))
            self._roots[objective_id] = root
        return root

    def _expiry(self) -> datetime | None:
        ttl = self.settings.approval_ttl_hours
        return None if ttl is None else utcnow() + timedelta(hours=ttl)

    def principal(self, actor: Actor, obj: Objective) -> Principal:
        return as_principal(actor, obj.team_id, obj.platform)

    async def decide(self, approval_id: int, user: Actor, approve: bool,
                     reason: str | None = None) -> Decision:
        """Approve or reject. Of two racing decisions (two clicks, two processes) exactly one is
        recorded; the other is told who decided first."""
        return await self._decision(partial(self._decide, approval_id, user, approve, reason),
                                    "approval.decide")

    async def _decision(self, write: Callable[[], Decision], what: str) -> Decision:
        """One human decision's transaction, retried past brief database errors; one that lost
        a race (or no longer applies) rolled back and says why."""
        try:
            return await self.db.retrying(write, what)
        except _Refused as refused:
            return Decision(False, refused.message)

    def _decide(self, approval_id: int, actor: Actor, approve: bool,
                reason: str | None) -> Decision:
        reason = redact(reason.strip()) if reason and reason.strip() else None
        with self.db.tx() as s:
            approval = s.get(Approval, approval_id) if valid_id(approval_id) else None
            if approval is None:
                return Decision(False, f"There is no approval #{approval_id}.")
            obj = s.get(Objective, approval.objective_id)
            assert obj is not None
            who = self.principal(actor, obj)
            user = who.user
            if not self.policy.may_decide(s, obj, who):
                audit(s, user, "approval.refused", obj.id, where=who.where, approval=approval.id,
                      approve=approve)
                return Decision(False, refusal("decide"))
            if (stale := _stale(approval, obj)) is not None:
                audit(s, user, "approval.stale", obj.id, where=who.where, approval=approval.id,
                      approve=approve, why=stale)
                return Decision(False, stale)
            if obj.state in TERMINAL_OBJECTIVE:
                return Decision(False, f"This objective is already {obj.state}.")
            to = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
            if not decide_approval(s, approval, to, user, reason):
                raise _Refused(_already(approval))
            emit(s, obj.thread, ApprovalDecided(obj.id, approval.id, approval.kind,
                                                approval.title, approve, user, reason,
                                                (approval.decided_at or utcnow()).isoformat()))
            audit(s, user, "approval.decided", obj.id, where=who.where, approval=approval.id,
                  kind=approval.kind, binding=approval.binding, approved=approve, reason=reason)
            self._apply_decision(s, obj, approval, approve, user, reason)
            verb = "approved" if approve else "rejected"
            text = f"{user} {verb}: {approval.title}" + (f" ({reason})" if reason else "")
            team, oid = obj.team_id, obj.id
            after_commit(s, lambda: self.remember_later(team, text, "decision", oid, user))
            after_commit(s, lambda: self.engine.poke(oid))
        return Decision(True, f"{verb.capitalize()} by {user}.")

    def _apply_decision(self, s: Session, obj: Objective, approval: Approval, approve: bool,
                        user: str, reason: str | None) -> None:
        if approval.kind == "plan":
            if not approve and reason and self._rejections(s, obj) <= \
                    self.settings.max_plan_rejections:
                self._replan_with(s, obj, user, reason)
            elif not approve:
                self._end(s, obj, ObjectiveState.CANCELLED, f"The plan was rejected by {user}"
                          + (f": {reason}" if reason else ".") )
            elif not move_objective(s, obj, ObjectiveState.RUNNING,
                                    only_from=[ObjectiveState.AWAITING_APPROVAL]):
                raise _Refused(f"This objective is {obj.state} now.")
            elif self.memory is not None:
                plan = "; ".join(f"{key} {role}: {title}" for key, role, title in s.execute(
                    select(Step.key, Step.role, Step.title).where(
                        Step.objective_id == obj.id, Step.plan_version == obj.plan_version)))
                text, team, oid = f"Approved plan for '{obj.goal}': {plan}", obj.team_id, obj.id
                after_commit(s, lambda: self.remember_later(team, text, "plan", oid, user))
        elif approval.kind == "budget":
            self._decide_budget(s, obj, approval, approve, user)
        elif approval.kind == "drift":
            self._decide_drift(s, obj, approval, approve, user)
        elif approval.kind == "step" and approval.step_id is not None:
            step = s.get(Step, approval.step_id)
            assert step is not None
            if approve and approval.binding not in (None, binding(step.role, step.instructions)):
                raise _Refused("This step's instructions changed after this approval was asked: "
                               "it was not approved.")
            ok = move_step(s, step, StepState.READY, only_from=[StepState.AWAITING_APPROVAL]) \
                if approve else move_step(s, step, StepState.SKIPPED,
                                          only_from=[StepState.AWAITING_APPROVAL],
                                          error=f"rejected by {user}")
            if not ok:
                raise _Refused(f"This step is {step.state} now.")

    def _rejections(self, s: Session, obj: Objective) -> int:
        """Plan rejections with feedback so far, this one included."""
        return len(s.scalars(select(Approval.id).where(
            Approval.objective_id == obj.id, Approval.kind == "plan",
            Approval.state == ApprovalState.REJECTED, Approval.reason.is_not(None))).all())

    def _replan_with(self, s: Session, obj: Objective, user: str, reason: str) -> None:
        """A plan rejected with a reason: the manager plans again from that feedback."""
        if not move_objective(s, obj, ObjectiveState.PLANNING,
                              f"Replanning with {user}'s feedback.",
                              only_from=[ObjectiveState.AWAITING_APPROVAL]):
            raise _Refused(f"This objective is {obj.state} now.")
        for step in s.scalars(select(Step).where(Step.objective_id == obj.id,
                                                 Step.plan_version == obj.plan_version)):
            move_step(s, step, StepState.CANCELLED, only_from=[StepState.PENDING])
        emit(s, obj.thread, Notice(obj.id, f"{user} rejected plan v{obj.plan_version}: "
                                           f"{reason}. Replanning with that feedback."))
        audit(s, user, "plan.replan_requested", obj.id, version=obj.plan_version,
              feedback=reason)
        oid = obj.id
        after_commit(s, lambda: self._spawn(self._plan(oid)))

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
            # only a live question: open, of a step that waits for it, of an objective that
            # has not ended (a cancelled objective's question must not swallow the reply)
            q = s.scalars(select(Question)
                          .join(Objective, Objective.id == Question.objective_id)
                          .join(Step, Step.id == Question.step_id)
                          .where(Objective.platform == thread.platform,
                                 Objective.team_id == thread.team_id,
                                 Objective.channel_id == thread.channel_id,
                                 Objective.thread_id == thread.thread_id,
                                 Objective.state.not_in([st.value for st in TERMINAL_OBJECTIVE]),
                                 Step.state == StepState.WAITING_HUMAN,
                                 Question.closed_at.is_(None))
                          .order_by(Question.id)).first()
            if q is None:
                return None
            now = utcnow()
            answered = changed(s, update(Question)
                               .where(Question.id == q.id, Question.closed_at.is_(None))
                               .values(answer=redact(text), answered_by=user, answered_at=now,
                                       closed_at=now)
                               .execution_options(synchronize_session=False))
            if not answered:  # another process's reply answered it first
                return None
            step = s.get(Step, q.step_id)
            assert step is not None
            move_step(s, step, StepState.READY, only_from=[StepState.WAITING_HUMAN])
            audit(s, user, "question.answered", q.objective_id, question=q.id)
            oid = q.objective_id
            if event_key is not None:
                s.add(InboundEvent(event_key=event_key, objective_id=oid))
        return oid

    async def cancel(self, objective_id: int, user: Actor) -> Decision:
        """Stop an objective: its requester or an admin (checked here, whoever calls)."""
        return await self._decision(partial(self._cancel, objective_id, user),
                                    "objective.cancel")

    def _cancel(self, objective_id: int, actor: Actor) -> Decision:
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id) if valid_id(objective_id) else None
            if obj is None:
                return Decision(False, f"There is no objective #{objective_id}.")
            who = self.principal(actor, obj)
            user = who.user
            if not self.policy.may_steer(s, obj, who):
                audit(s, user, "objective.cancel_refused", obj.id, where=who.where)
                return Decision(False, refusal("cancel"))
            if obj.state in TERMINAL_OBJECTIVE:
                return Decision(False, f"Objective #{objective_id} is already {obj.state}.")
            self._end(s, obj, ObjectiveState.CANCELLED, f"Cancelled by {user}.")
            audit(s, user, "objective.cancelled", obj.id, where=who.where)
            after_commit(s, lambda: self.engine.cancel(objective_id))
        return Decision(True, f"Objective #{objective_id} cancelled.")

    async def request_picture(self, objective_id: int, user: str) -> Decision:
        """Have a picture of the plan as it stands posted in the objective's thread: an outbox
        event like every message, so it is posted once, after a restart too."""
        return await self._decision(partial(self._request_picture, objective_id, user),
                                    "objective.picture")

    def _request_picture(self, objective_id: int, user: str) -> Decision:
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id) if valid_id(objective_id) else None
            if obj is None:
                return Decision(False, f"There is no objective #{objective_id}.")
            emit(s, obj.thread, PictureRequested(obj.id, user))
        return Decision(True, f"A picture of objective #{objective_id}'s plan is on its way to "
                              f"its thread.")

    async def pause(self, objective_id: int, user: Actor) -> Decision:
        return await self._pause_or_resume(objective_id, user, ObjectiveState.PAUSED)

    async def resume(self, objective_id: int, user: Actor) -> Decision:
        return await self._pause_or_resume(objective_id, user, ObjectiveState.RUNNING)

    async def _pause_or_resume(self, objective_id: int, user: Actor,
                               to: ObjectiveState) -> Decision:
        return await self._decision(partial(self._move, objective_id, user, to),
                                    f"objective.{to}")

    def _move(self, objective_id: int, actor: Actor, to: ObjectiveState) -> Decision:
        want = ObjectiveState.RUNNING if to == ObjectiveState.PAUSED else ObjectiveState.PAUSED
        verb = "Paused" if to == ObjectiveState.PAUSED else "Resumed"
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id) if valid_id(objective_id) else None
            if obj is None:
                return Decision(False, f"There is no objective #{objective_id}.")
            who = self.principal(actor, obj)
            user = who.user
            if not self.policy.may_steer(s, obj, who):
                audit(s, user, f"objective.{verb.lower()}_refused", obj.id, where=who.where)
                return Decision(False, refusal(verb.lower().removesuffix("d")))
            if obj.state != want:
                return Decision(False, f"Objective #{objective_id} is {obj.state}, not {want}.")
            if to == ObjectiveState.RUNNING and obj.plan_version == 0:
                to = ObjectiveState.PLANNING  # it was paused (for budget) while planning
                after_commit(s, lambda: self._spawn(self._plan(objective_id)))
            elif to == ObjectiveState.RUNNING and not _plan_approved(s, obj.id):
                to = ObjectiveState.AWAITING_APPROVAL  # its plan's approval expired
            if not move_objective(s, obj, to, f"{verb} by {user}.", only_from=[want]):
                raise _Refused(f"Objective #{objective_id} is {obj.state} now.")
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, to, user, obj.state_reason))
            if to == ObjectiveState.AWAITING_APPROVAL:
                self._ask_plan_again(s, obj)
            audit(s, user, f"objective.{verb.lower()}", obj.id, where=who.where)
            after_commit(s, lambda: self.engine.poke(objective_id))
            if to in (ObjectiveState.RUNNING, ObjectiveState.PAUSED):  # else it has no teams yet
                self._move_teams(s, obj, want, to, f"{verb} with objective #{obj.id} by {user}.")
        return Decision(True, f"Objective #{objective_id} {to}.")

    def _move_teams(self, s: Session, obj: Objective, want: ObjectiveState, to: ObjectiveState,
                    why: str) -> None:
        """Pause or resume the teams below `obj` with it; a team that waits for its own budget
        approval stays paused (the approval resumes it)."""
        for team in self._teams(s, obj, [want]):
            if to == ObjectiveState.RUNNING and s.scalar(select(Approval.id).where(
                    Approval.objective_id == team.id, Approval.kind == "budget",
                    Approval.state == ApprovalState.PENDING)) is not None:
                continue
            if move_objective(s, team, to, why, only_from=[want]):
                audit(s, "swarm", f"objective.{to}", team.id, reason=why)
                after_commit(s, partial(self.engine.poke, team.id))

    # -- budgets and recovery ---------------------------------------------------------------
    def hold_for_budget(self, s: Session, obj: Objective, exc: BudgetExceeded) -> None:
        """Pause `obj` before a call that would pass a ceiling and ask to raise it (once)."""
        resume_to = obj.state
        if not move_objective(s, obj, ObjectiveState.PAUSED, f"Paused at its budget: {exc}.",
                              only_from=[ObjectiveState.RUNNING, ObjectiveState.PLANNING]):
            return  # already paused, or ended, meanwhile (here or in another process)
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

    def _decide_budget(self, s: Session, obj: Objective, approval: Approval, approve: bool,
                       user: str) -> None:
        if not approve:
            self._end(s, obj, ObjectiveState.CANCELLED,
                      f"Stopped at its budget: {user} did not approve raising it.")
            oid = obj.id
            after_commit(s, lambda: self.engine.cancel(oid))  # a parallel step may be in flight
            return
        request = self.budget.apply_raise(s, approval.id)
        if obj.state == ObjectiveState.PAUSED:
            to = ObjectiveState(request.resume_to) if request else ObjectiveState.RUNNING
            if not move_objective(s, obj, to, f"Budget raised by {user}.",
                                  only_from=[ObjectiveState.PAUSED]):
                return
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, to, user, obj.state_reason))
            if to == ObjectiveState.PLANNING:
                oid = obj.id
                after_commit(s, lambda: self._spawn(self._plan(oid)))

    # -- drift ---------------------------------------------------------------------------------
    def hold_for_drift(self, s: Session, obj: Objective, check: GroundingCheck,
                       violated: list[ConstraintVerdict]) -> bool:
        """A grounding check found drift: hold the steps not started yet (the objective pauses;
        running steps finish), post the notice and ask the humans: apply the correction
        (approve), continue as planned (reject), or cancel. False: it was no longer running."""
        reason = f"Held by a grounding check: {check.drifted or 'the work drifted'}"
        if not move_objective(s, obj, ObjectiveState.PAUSED, reason[:1000],
                              only_from=[ObjectiveState.RUNNING]):
            return False
        approval = Approval(objective_id=obj.id, kind="drift", state=ApprovalState.PENDING,
                            title=f"Apply the correction: {check.correction}"[:1000])
        s.add(approval)
        s.flush()
        check.approval_id = approval.id
        held = list(s.scalars(select(Step.title).where(
            Step.objective_id == obj.id, Step.plan_version == obj.plan_version,
            Step.state.in_([StepState.PENDING, StepState.READY, StepState.AWAITING_APPROVAL]))
            .order_by(Step.position)))
        emit(s, obj.thread, DriftDetected(obj.id, check.id, approval.id, check.signal,
                                          check.score, check.drifted, check.correction,
                                          violated, held))
        audit(s, "grounding", "drift.detected", obj.id, check=check.id, signal=check.signal,
              score=check.score, drifted=check.drifted, correction=check.correction,
              violated=[v.constraint for v in violated], held=held)
        text, team, oid = (f"Drift on '{obj.goal}': {check.drifted}. Suggested correction: "
                           f"{check.correction}"), obj.team_id, obj.id
        after_commit(s, lambda: self.remember_later(team, text, "decision", oid, "grounding"))
        return True

    def _decide_drift(self, s: Session, obj: Objective, approval: Approval, approve: bool,
                      user: str) -> None:
        """Approve: the correction joins the remaining steps' instructions; reject: the plan
        goes on as it was. Either way the held steps run again (cancel is `/swarm cancel`)."""
        check = s.scalar(select(GroundingCheck).where(GroundingCheck.approval_id == approval.id))
        if approve and check is not None and check.correction:
            self._correct(s, obj, check.correction, user)
        if move_objective(s, obj, ObjectiveState.RUNNING,
                          f"{'Correction applied' if approve else 'Continued as planned'} "
                          f"by {user}.", only_from=[ObjectiveState.PAUSED]):
            emit(s, obj.thread, ObjectiveStateChanged(obj.id, ObjectiveState.RUNNING, user,
                                                      obj.state_reason))

    def _correct(self, s: Session, obj: Objective, correction: str, user: str) -> None:
        """Add the correction to every step not started yet; a step waiting for its approval
        is asked again, since an approval binds to the instructions it showed."""
        line = f"\nCorrection from the grounding check, approved by {user}: {correction}"
        for step in s.scalars(select(Step).where(
                Step.objective_id == obj.id, Step.plan_version == obj.plan_version,
                Step.state.in_([StepState.PENDING, StepState.READY,
                                StepState.AWAITING_APPROVAL]))):
            step.instructions = step.instructions + line
            if step.state == StepState.AWAITING_APPROVAL:
                s.execute(update(Approval).where(Approval.step_id == step.id,
                                                 Approval.state == ApprovalState.PENDING)
                          .values(state=ApprovalState.CLOSED, decided_at=utcnow())
                          .execution_options(synchronize_session=False))
                move_step(s, step, StepState.PENDING, only_from=[StepState.AWAITING_APPROVAL])

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

    def _end(self, s: Session, obj: Objective, state: ObjectiveState, summary: str) -> None:
        """End `obj` (cancelled, or rejected): its steps cancelled, runs abandoned, and its open
        questions and approvals closed in the same transaction, so none of them outlives it;
        its teams end with it, and a team's own step fails."""
        if not move_objective(s, obj, state, summary, summary=summary):
            raise _Refused(f"Objective #{obj.id} is already {obj.state}.")
        self._close(s, obj, state, summary)
        self._report_to_parent(s, obj)
        for team in self._teams(s, obj, [st for st in ObjectiveState
                                         if st not in TERMINAL_OBJECTIVE]):
            why = f"Cancelled with objective #{obj.id}."
            if move_objective(s, team, ObjectiveState.CANCELLED, why, summary=why):
                self._close(s, team, ObjectiveState.CANCELLED, why)
                after_commit(s, partial(self.engine.cancel, team.id))

    def _close(self, s: Session, obj: Objective, state: ObjectiveState, summary: str) -> None:
        now = utcnow()
        s.execute(update(Step).where(Step.objective_id == obj.id,
                                     Step.state.not_in([st.value for st in (
                                         StepState.FINISHED, StepState.FAILED,
                                         StepState.SKIPPED, StepState.REPLACED)]))
                  .values(state=StepState.CANCELLED, claim_token=None, lease_owner=None,
                          lease_expires_at=None)
                  .execution_options(synchronize_session=False))
        s.execute(update(StepRun).where(StepRun.objective_id == obj.id,
                                        StepRun.state.in_([RunState.RUNNING, RunState.WAITING]))
                  .values(state=RunState.ABANDONED, finished_at=now)
                  .execution_options(synchronize_session=False))
        s.execute(update(Question).where(Question.objective_id == obj.id,
                                         Question.closed_at.is_(None))
                  .values(closed_at=now).execution_options(synchronize_session=False))
        s.execute(update(Approval).where(Approval.objective_id == obj.id,
                                         Approval.state == ApprovalState.PENDING)
                  .values(state=ApprovalState.CLOSED, decided_at=now)
                  .execution_options(synchronize_session=False))
        view = objective_view(s, obj)
        emit(s, obj.thread, ObjectiveFinished(obj.id, state, summary, [], view.tokens, view.cost))

    def finish_objective(self, objective_id: int) -> None:
        """Called by the engine when every step has come to an end."""
        with self.db.tx() as s:
            obj = s.get(Objective, objective_id, with_for_update=True)
            assert obj is not None
            if obj.state != ObjectiveState.RUNNING:
                return  # paused, ended, or finished by another process
            view = objective_view(s, obj)
            failed = [st for st in view.steps if st.state == StepState.FAILED]
            state = ObjectiveState.FAILED if failed else ObjectiveState.FINISHED
            done = sum(st.state == StepState.FINISHED for st in view.steps)
            summary = (f"{done} of {len(view.steps)} steps finished"
                       + (f"; failed: {', '.join(st.title for st in failed)}" if failed else "")
                       + f". {view.tokens} tokens, {view.spend.show_cost()}."
                       + (f" Its teams: {sum(t.tokens for t in view.teams.values())} tokens, "
                          f"${sum(t.cost for t in view.teams.values()):.4f}."
                          if view.teams else ""))
            if not move_objective(s, obj, state, summary, only_from=[ObjectiveState.RUNNING],
                                  summary=summary):
                return
            # a team reports to its parent's step, which sums it up: the thread gets one line
            results = [] if obj.parent_id else [
                StepResult(st.title, st.role, st.state, st.output or st.error or "")
                for st in view.steps]
            emit(s, obj.thread, ObjectiveFinished(obj.id, state, summary, results, view.tokens,
                                                  view.cost))
            audit(s, "swarm", f"objective.{state}", obj.id, summary=summary)
            self._report_to_parent(s, obj)
            text, team = f"Objective '{obj.goal}' {state}: {summary}", obj.team_id
            after_commit(s, lambda: self.remember_later(team, text, "outcome", objective_id))
            if obj.parent_id:  # the details the summary leaves out: recallable by later steps
                for st in view.steps:
                    if st.state == StepState.FINISHED and st.output:
                        detail = f"Team #{obj.id}, '{st.title}': {st.output}"
                        after_commit(s, partial(self.remember_later, team, detail,
                                                "result", objective_id))

    # -- start-up ----------------------------------------------------------------------------
    async def recover(self) -> list[int]:
        """Resume every non-terminal objective. A step whose process stopped (its lease lapsed,
        or its owner on this machine has exited) runs again; a step another live process runs is
        left to it, and watched (swarm.engine.driver)."""
        with self.db.tx() as s:
            live = s.execute(select(Objective.id, Objective.state).where(
                Objective.state.not_in([st.value for st in TERMINAL_OBJECTIVE]))).all()
            ids = [oid for oid, _ in live]
            if ids:
                leases.take_over(s.connection(), ids)
            for oid, state in live:
                audit(s, "swarm", "objective.recovered", oid, state=state)
        for oid, state in live:
            if state == ObjectiveState.PLANNING:
                self._spawn(self._plan(oid))
            elif state == ObjectiveState.RUNNING:
                self.engine.poke(oid)
        return ids

    # -- reading -----------------------------------------------------------------------------
    def view(self, objective_id: int) -> ObjectiveView | None:
        if not valid_id(objective_id):
            return None
        with self.db.read() as s:
            obj = s.get(Objective, objective_id)
            return objective_view(s, obj) if obj else None

    def objectives(self, *, team_id: str | None = None, active_only: bool = False,
                   limit: int = 20, thread: ThreadRef | None = None) -> list[ObjectiveView]:
        """The latest first: of a team, or of one thread (e.g. the one whose Stop was clicked);
        one per tree: a team shows in its root's view."""
        with self.db.read() as s:
            q = select(Objective).where(Objective.parent_id.is_(None)) \
                .order_by(Objective.id.desc()).limit(limit)
            if team_id is not None:
                q = q.where(Objective.team_id == team_id)
            if thread is not None:
                q = q.where(Objective.platform == thread.platform,
                            Objective.team_id == thread.team_id,
                            Objective.channel_id == thread.channel_id,
                            Objective.thread_id == thread.thread_id)
            if active_only:
                q = q.where(Objective.state.not_in([st.value for st in TERMINAL_OBJECTIVE]))
            return [objective_view(s, o) for o in s.scalars(q)]

    def pending_approvals(self, objective_id: int) -> list[Approval]:
        """The objective's open approvals, its teams' included (one tree, one thread)."""
        with self.db.read() as s:
            return list(s.scalars(select(Approval).where(
                Approval.objective_id.in_(subtree(s, objective_id)),
                Approval.state == ApprovalState.PENDING).order_by(Approval.id)))

    def pending_plan(self, approval_id: int) -> bool:
        """Whether `approval_id` is a plan approval still waiting (rejecting one asks why)."""
        if not valid_id(approval_id):
            return False
        with self.db.read() as s:
            approval = s.get(Approval, approval_id)
            return approval is not None and approval.kind == "plan" and \
                approval.state == ApprovalState.PENDING

    def open_questions(self, objective_id: int) -> list[Question]:
        with self.db.read() as s:
            return list(s.scalars(select(Question).where(
                Question.objective_id == objective_id, Question.closed_at.is_(None))))


def plan_binding(version: int) -> str:
    return f"plan:v{version}"


def _feedback(s: Session, obj: Objective) -> str | None:
    """The reason given with the rejection of the objective's current plan, if any."""
    if obj.plan_version == 0:
        return None
    return s.scalar(select(Approval.reason).where(
        Approval.objective_id == obj.id, Approval.kind == "plan",
        Approval.binding == plan_binding(obj.plan_version),
        Approval.state == ApprovalState.REJECTED))


def _stale(approval: Approval, obj: Objective) -> str | None:
    """Why `approval` can no longer be decided: already decided, for a plan since replaced,
    or expired. None while it still stands for exactly what it showed."""
    if approval.kind == "plan" and approval.binding not in (None,
                                                            plan_binding(obj.plan_version)):
        return (f"That plan was replaced by plan v{obj.plan_version}: decide on the newest "
                f"plan's message.")
    if approval.state != ApprovalState.PENDING:
        return _already(approval)
    if approval.expires_at is not None and approval.expires_at <= utcnow():
        return "This approval expired; ask for it again (`/swarm status` shows where it is)."
    return None


def _team_context(s: Session, obj: Objective) -> list[str]:
    """What a team's manager plans with: its parent's goal and the outputs of the steps its
    own step depends on (data, like memory: never instructions)."""
    if obj.parent_id is None or obj.parent_step_id is None:
        return []
    parent, step = s.get(Objective, obj.parent_id), s.get(Step, obj.parent_step_id)
    assert parent is not None and step is not None
    lines = [f"This team does one step ('{step.title}') of objective #{parent.id}: "
             f"{parent.goal}"]
    lines += [f"Output of the step '{title}': {output}" for title, output in s.execute(
        select(Step.title, Step.output).where(
            Step.objective_id == parent.id, Step.plan_version == step.plan_version,
            Step.key.in_(list(step.depends_on)), Step.state == StepState.FINISHED)
        .order_by(Step.position))]
    return lines


def _plan_approved(s: Session, objective_id: int) -> bool:
    last = s.scalar(select(Approval.state).where(Approval.objective_id == objective_id,
                                                 Approval.kind == "plan")
                    .order_by(Approval.id.desc()).limit(1))
    return last in (None, ApprovalState.APPROVED)


def constraints_of(s: Session, objective_id: int) -> Constraints:
    row = s.scalar(select(ObjectiveConstraints.data)
                   .where(ObjectiveConstraints.objective_id == objective_id))
    return Constraints.model_validate(row) if row else Constraints()


def _already(approval: Approval) -> str:
    if approval.state == ApprovalState.CLOSED:
        return "This request was closed: its objective ended or its step changed."
    if approval.state == ApprovalState.EXPIRED:
        return "This request expired before anyone decided; an admin can resume the objective."
    return f"Already {approval.state} by {approval.decided_by}."
