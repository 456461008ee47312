"""The eager DAG engine: a step starts the moment its dependencies finish; no supersteps."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, select

from swarm.agents.roles import binding
from swarm.engine import leases
from swarm.engine.attempt import StepRunner, StepServices
from swarm.events import ApprovalRequested
from swarm.states import TERMINAL_STEP, ApprovalState, ObjectiveState, StepState
from swarm.store.audit import audit
from swarm.store.guards import move_step
from swarm.store.models import Approval, Objective, Step, table
from swarm.store.outbox import emit

log = logging.getLogger(__name__)
_BLOCKED = frozenset({StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED})
_WAITING = (StepState.PENDING, StepState.READY)
SHUTDOWN_S = 10.0  # how long shutdown waits for cancelled steps to come to rest
_O, _S = table(Objective), table(Step)
_OBJECTIVE = select(_O.c.state, _O.c.plan_version).where(_O.c.id == bindparam("oid"))
_NODES = select(_S.c.id, _S.c.key, _S.c.role, _S.c.state, _S.c.depends_on, _S.c.needs_approval
                ).where(_S.c.objective_id == bindparam("oid"),
                        _S.c.plan_version == bindparam("version"))


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("engine.driver_crashed error=%s", type(exc).__name__, exc_info=exc)


class Executor(Protocol):
    """Runs one step to a resting state: here (InProcessExecutor) or on a Celery worker
    (swarm.engine.queue.CeleryExecutor). `local`: the step runs in this process, so what it
    changes besides its own state (new steps, a pause) pokes this driver itself; a remote
    step's pokes stay in its worker, and the driver reloads the objective after it instead."""

    local: bool

    async def run_step(self, objective_id: int, step_id: int) -> StepState: ...


class InProcessExecutor:
    local = True

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner

    async def run_step(self, objective_id: int, step_id: int) -> StepState:
        return await self.runner.run(objective_id, step_id)


@dataclass
class _Node:
    id: int
    key: str
    role: str
    state: StepState
    deps: list[str]
    needs_approval: bool


@dataclass
class _Drive:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reload: bool = True
    task: asyncio.Task[None] | None = None
    in_flight: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    nodes: dict[int, _Node] = field(default_factory=dict)
    by_key: dict[str, _Node] = field(default_factory=dict)
    dependents: dict[str, list[_Node]] = field(default_factory=dict)
    changed: list[_Node] = field(default_factory=list)  # came to rest since the last look
    ready: dict[int, _Node] = field(default_factory=dict)  # startable, not started yet
    checked: int | None = None  # finished steps at the last checkpoint

    def load(self, nodes: dict[int, _Node]) -> None:
        self.nodes, self.changed, self.ready = nodes, [], {}
        self.by_key = {n.key: n for n in nodes.values()}
        self.dependents = {n.key: [] for n in nodes.values()}
        for n in nodes.values():
            for k in n.deps:
                self.dependents[k].append(n)

    def to_look_at(self, everything: bool) -> list[_Node]:
        """The nodes whose readiness may have changed: all of them after a load, else the
        ones that came to rest and their dependents (a chain of n steps stays O(n))."""
        if everything:
            return list(self.nodes.values())
        seen: dict[int, _Node] = {}
        for n in self.changed:
            seen[n.id] = n
            for d in self.dependents.get(n.key, ()):
                seen[d.id] = d
        self.changed = []
        return list(seen.values())


class Driver:
    """Drives each running objective's DAG; `finish(objective_id)` is called when every step
    of it has come to an end."""

    def __init__(self, services: StepServices, finish: Callable[[int], None],
                 executor: Executor | None = None) -> None:
        self.swarm = services
        self.finish = finish
        services.poke = self.poke
        self.runner = StepRunner(services)
        self.executor = executor or InProcessExecutor(self.runner)
        self._global = asyncio.Semaphore(services.settings.max_concurrent_steps)
        self._drives: dict[int, _Drive] = {}
        # Awaited after every `checkpoint_every` finished steps, before any further step
        # starts (schedules/ sets it: the grounding check, which may hold the objective).
        self.checkpoint: Callable[[int], Awaitable[None]] | None = None
        self.checkpoint_every = services.settings.grounding_after_steps
        # False in a worker process: it runs the steps it is sent and drives no objective; the
        # driving processes notice what its steps changed (swarm.engine.queue, watch_running)
        self.driving = True

    def poke(self, objective_id: int) -> None:
        """Something changed outside the driver (approval, answer, pause...): look again."""
        if not self.driving:
            return
        drive = self._drives.get(objective_id)
        if drive is None or drive.task is None or drive.task.done():
            drive = self._drives[objective_id] = _Drive()
            drive.task = asyncio.get_running_loop().create_task(self._drive(objective_id, drive))
            drive.task.add_done_callback(_report_crash)
        drive.reload = True
        drive.wake.set()

    def cancel(self, objective_id: int) -> None:
        drive = self._drives.get(objective_id)
        if drive is not None:
            for task in drive.in_flight.values():
                task.cancel()
            drive.reload = True
            drive.wake.set()

    @property
    def busy(self) -> bool:
        return any(d.task and not d.task.done() for d in self._drives.values())

    async def watch_running(self, every_s: float) -> None:
        """Drive every running objective no driver of this process drives, every `every_s`.
        Pokes stay in the process that made them (a worker's, another web replica's), and a
        process that drove an objective may have stopped: this is how the others notice. Two
        drivers on one objective stay correct (claims, skips, approvals and the finish are
        guarded writes); this only keeps an objective from waiting for a poke that never
        comes."""
        while True:
            await asyncio.sleep(every_s)
            try:
                with self.swarm.db.read() as s:
                    ids = list(s.scalars(select(Objective.id).where(
                        Objective.state == ObjectiveState.RUNNING)))
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("engine.watch_failed error=%s", type(exc).__name__)
                continue
            for oid in ids:
                drive = self._drives.get(oid)
                if drive is None or drive.task is None or drive.task.done():
                    self.poke(oid)

    async def join(self) -> None:
        """Wait for every driver to come to rest (tests, the console, shutdown)."""
        while tasks := [d.task for d in self._drives.values() if d.task and not d.task.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every step and driver (bounded), then hand back the steps still claimed."""
        tasks: list[asyncio.Task[None]] = []
        for drive in self._drives.values():
            for task in drive.in_flight.values():
                task.cancel()
                tasks.append(task)
            if drive.task:
                drive.task.cancel()
                tasks.append(drive.task)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_S)
            if stuck:
                log.warning("engine.shutdown_timeout tasks=%d", len(stuck))
        self.runner.release_all()

    def _load(self, objective_id: int) -> tuple[ObjectiveState, dict[int, _Node]]:
        with self.swarm.db.read() as s:  # prebuilt Core statements: columns, no ORM objects
            obj = s.execute(_OBJECTIVE, {"oid": objective_id}).one()
            rows = s.execute(_NODES, {"oid": objective_id, "version": obj.plan_version})
            nodes = {r.id: _Node(r.id, r.key, r.role, StepState(r.state), list(r.depends_on),
                                 r.needs_approval) for r in rows}
            return ObjectiveState(obj.state), nodes

    async def _drive(self, objective_id: int, drive: _Drive) -> None:
        state = ObjectiveState.RUNNING
        limit = self.swarm.settings.max_concurrent_steps_per_objective
        try:
            while True:
                everything = drive.reload
                if everything:
                    drive.reload = False
                    state, nodes = self._load(objective_id)
                    drive.load(nodes)
                elsewhere = [n for n in drive.nodes.values() if n.state == StepState.RUNNING
                             and n.id not in drive.in_flight]
                if state == ObjectiveState.RUNNING and self._checkpoint_due(drive):
                    await self._checkpoint(objective_id, drive)
                    continue
                if state == ObjectiveState.RUNNING:
                    for node in self._advance(objective_id, drive, drive.to_look_at(everything)):
                        drive.ready[node.id] = node
                    for node in list(drive.ready.values()):
                        if len(drive.in_flight) >= limit:
                            break
                        del drive.ready[node.id]
                        if node.id not in drive.in_flight and node.state in _WAITING:
                            drive.in_flight[node.id] = asyncio.create_task(
                                self._run(objective_id, node.id, drive))
                    if not drive.in_flight and all(n.state in TERMINAL_STEP
                                                   for n in drive.nodes.values()):
                        self.finish(objective_id)
                        return
                if state == ObjectiveState.RUNNING and elsewhere:
                    # running in another process: watch it, and take it over once its lease
                    # lapses (that process stopped), so the objective never stalls
                    await self._watch(objective_id, drive)
                    continue
                if not drive.in_flight:
                    return  # at rest: only an approval, an answer or a resume moves it now
                await drive.wake.wait()
                drive.wake.clear()
        finally:
            if self._drives.get(objective_id) is drive and not drive.in_flight:
                self._drives.pop(objective_id, None)

    def _checkpoint_due(self, drive: _Drive) -> bool:
        if self.checkpoint is None or self.checkpoint_every <= 0:
            return False
        finished = sum(n.state == StepState.FINISHED for n in drive.nodes.values())
        mark = finished // self.checkpoint_every * self.checkpoint_every
        if drive.checked is None:  # a fresh drive (or a restart) counts from here
            drive.checked = mark
        return mark > drive.checked and any(n.state in _WAITING for n in drive.nodes.values())

    async def _checkpoint(self, objective_id: int, drive: _Drive) -> None:
        assert self.checkpoint is not None
        drive.checked = (sum(n.state == StepState.FINISHED for n in drive.nodes.values())
                         // self.checkpoint_every * self.checkpoint_every)
        try:
            await self.checkpoint(objective_id)
        except Exception:  # a check that cannot run must not stop the work
            log.exception("engine.checkpoint_failed objective=%s", objective_id)
        drive.reload = True

    async def _watch(self, objective_id: int, drive: _Drive) -> None:
        poll = min(self.swarm.settings.lease_s / 3, 2.0)
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancel is never swallowed
            async with asyncio.timeout(poll):
                await drive.wake.wait()
        drive.wake.clear()
        with self.swarm.db.read() as s:  # a plain read first: the write lock only when due
            due, _ = leases.lapsed(s, [objective_id])
        if due:
            with self.swarm.db.core(wake=False) as c:  # the reload below sees what changed
                leases.take_over(c, [objective_id])
        drive.reload = True

    async def _run(self, objective_id: int, step_id: int, drive: _Drive) -> None:
        state: StepState | None = None
        try:
            async with self._global:
                state = await self.executor.run_step(objective_id, step_id)
        except asyncio.CancelledError:
            state = StepState.CANCELLED
            raise
        except Exception:  # its claim could not be written (the database stayed away)
            log.exception("engine.step_crashed objective=%s step=%s", objective_id, step_id)
            drive.reload = True  # read the step's state again rather than guess it
        finally:
            # drive.nodes may have been reloaded meanwhile: update whatever is current
            if state is not None and (node := drive.nodes.get(step_id)) is not None:
                node.state = state
                drive.changed.append(node)
            if not self.executor.local:
                drive.reload = True
            drive.in_flight.pop(step_id, None)
            drive.wake.set()

    def _advance(self, objective_id: int, drive: _Drive, look: list[_Node]) -> list[_Node]:
        """Skip what can never run, ask approval where needed; return the steps to start."""
        by_key = drive.by_key
        skip: list[_Node] = []
        blocked = [n for n in look if n.state in _WAITING
                   and any(by_key[k].state in _BLOCKED for k in n.deps)]
        while blocked:  # until no more: a skipped step blocks its own dependents
            for node in blocked:
                node.state = StepState.SKIPPED
            skip += blocked
            blocked = list({d.id: d for n in blocked for d in drive.dependents[n.key]
                            if d.state in _WAITING}.values())
        start: list[_Node] = []
        ask: list[_Node] = []
        for node in look:
            if node.state not in _WAITING:
                continue
            if all(by_key[k].state == StepState.FINISHED for k in node.deps):
                if node.state == StepState.PENDING and node.needs_approval:
                    ask.append(node)
                else:
                    start.append(node)
        if skip or ask:
            self._mark(objective_id, skip, ask)
        return start

    def _mark(self, objective_id: int, skip: list[_Node], ask: list[_Node]) -> None:
        """Skip and ask in one transaction; each move is guarded, so when two processes drive
        one objective, a step is skipped, or asked about, once."""
        with self.swarm.db.tx() as s:
            obj = s.get(Objective, objective_id)
            assert obj is not None
            for node in skip:
                step = s.get(Step, node.id)
                assert step is not None
                move_step(s, step, StepState.SKIPPED, only_from=_WAITING,
                          error="skipped: a step it depends on did not finish")
                node.state = StepState(step.state)
            for node in ask:
                step = s.get(Step, node.id)
                assert step is not None
                if not move_step(s, step, StepState.AWAITING_APPROVAL,
                                 only_from=[StepState.PENDING]):
                    node.state = StepState(step.state)
                    continue
                approval = Approval(objective_id=obj.id, step_id=step.id, kind="step",
                                    title=_step_title(step), state=ApprovalState.PENDING,
                                    binding=binding(step.role, step.instructions))
                s.add(approval)
                s.flush()
                emit(s, obj.thread, ApprovalRequested(obj.id, approval.id, "step", approval.title,
                                                      step.id))
                audit(s, "swarm", "approval.requested", obj.id, approval=approval.id,
                      step=step.key)
                node.state = StepState.AWAITING_APPROVAL


def _step_title(step: Step) -> str:
    """What the approver sees, and so approves: the role and, once it was retried with new
    instructions, those instructions."""
    title = f"Run step '{step.title}' ({step.role})"
    if step.attempts:
        title += f" with new instructions: {step.instructions[:300]}"
    return title
