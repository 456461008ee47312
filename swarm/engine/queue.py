"""Step runs as Celery tasks: the executor that sends them and the task a worker runs.

The driving process (`serve --role web|all`) still decides what is ready. `CeleryExecutor`
sends one task per step run and waits for the step to come to rest by watching the database:
the database is the result, so no result backend. A worker (`threadswarm worker`) runs the task
on its own swarm's StepRunner. acks_late, reject_on_worker_lost and a prefetch of 1 mean that a
worker killed mid-step leaves its message to another worker, which takes the step over once the
dead owner's lease lapsed (at once when that owner was a process on this machine); the claim
makes a rerun safe: a step that came to rest is never claimed again, so a task delivered twice,
or sent again, does nothing. A task never waits for a human: waiting is a row.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import select

from swarm.engine import leases
from swarm.engine.attempt import StepRunner
from swarm.states import ObjectiveState, StepState
from swarm.store.db import Database
from swarm.store.models import Objective, Step

log = logging.getLogger(__name__)
TASK = "threadswarm.run_step"
POLL_S = 0.1  # how often the executor looks at the steps it waits for (one query for all)
LAPSED_EVERY_S = 1.0  # and how often it checks their leases
SEND_BACKOFF_MAX_S = 10.0  # a send the broker refused is tried again, at most this far apart
_QUEUED = (StepState.PENDING, StepState.READY)


def celery_app(broker_url: str, queue: str) -> Celery:
    """The Celery app both sides use: the driver sends on it, the worker consumes from it."""
    app = Celery("threadswarm", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,  # acked once the run came to rest, so a dead worker's is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a busy worker holds no step another could run now
        task_ignore_result=True,
        task_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},  # a sent task is in the broker
        worker_hijack_root_logger=False,  # our logging (redacting) stays in charge
    )
    return app


def task_id(step_id: int, attempts: int) -> str:
    """One id per step and attempt: a resend of the same run reads as the same task."""
    return f"threadswarm-step-{step_id}-{attempts}"


async def run_remote(runner: StepRunner, objective_id: int, step_id: int) -> StepState:
    """The task's body, on the worker's loop: take the step over if its last owner stopped
    (a redelivery after a worker died), then run it; a step at rest is not claimed again."""
    db = runner.swarm.db
    with db.read() as s:
        due, _ = leases.lapsed(s, [objective_id])
    if step_id in due:
        with db.core(wake=False) as c:
            leases.take_over(c, [objective_id])
    return await runner.run(objective_id, step_id)


def serve_steps(app: Celery, runner: StepRunner, loop: asyncio.AbstractEventLoop) -> None:
    """Register the step task on `app`, running each on `loop` (the worker's own, persistent:
    the runner's heartbeat, batching and the LLM client live on it)."""

    def run_step(objective_id: int, step_id: int) -> str:
        future = asyncio.run_coroutine_threadsafe(run_remote(runner, objective_id, step_id),
                                                  loop)
        state = future.result()
        log.info("worker.step_ran objective=%s step=%s state=%s", objective_id, step_id, state)
        return str(state)

    app.task(name=TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             shared=False)(run_step)


@dataclass
class _Waiting:
    objective_id: int
    attempts: int  # the step's attempts when the task was sent: a claim makes it grow
    done: asyncio.Future[StepState]


class CeleryExecutor:
    """Runs a step by sending it to the workers, then waits until the database shows it at
    rest. A step whose worker died is taken over here too (its lease lapsed) and handed back to
    the driver as ready, which sends it again."""

    local = False  # the driver reloads after each step: the worker's pokes stay in its process

    def __init__(self, app: Celery, db: Database, *, poll_s: float = POLL_S,
                 send: Callable[[int, int, int], None] | None = None) -> None:
        self.app, self.db, self.poll_s = app, db, poll_s
        self._send = send or self._publish
        self._waiting: dict[int, _Waiting] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._lapsed_at = 0.0

    def _publish(self, objective_id: int, step_id: int, attempts: int) -> None:
        self.app.send_task(TASK, args=(objective_id, step_id),
                           task_id=task_id(step_id, attempts))

    async def run_step(self, objective_id: int, step_id: int) -> StepState:
        with self.db.read() as s:
            attempts = int(s.scalar(select(Step.attempts).where(Step.id == step_id)) or 0)
        for tries in itertools.count():
            try:
                await asyncio.to_thread(self._send, objective_id, step_id, attempts)
                break
            except Exception as exc:  # the broker is away: the step waits for it, in flight
                delay = min(SEND_BACKOFF_MAX_S, 0.5 * 2 ** tries)
                log.warning("executor.send_failed step=%s error=%s retry_in_s=%.1f", step_id,
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
        done: asyncio.Future[StepState] = asyncio.get_running_loop().create_future()
        self._waiting[step_id] = _Waiting(objective_id, attempts, done)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            return await done
        finally:
            self._waiting.pop(step_id, None)

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.poll_s)
            try:
                self._look(dict(self._waiting))
            except Exception as exc:  # the database is away: look again on the next tick
                log.warning("executor.watch_failed error=%s", type(exc).__name__)

    def _look(self, waiting: dict[int, _Waiting]) -> None:
        with self.db.read() as s:
            rows = s.execute(select(Step.id, Step.state, Step.attempts, Objective.state)
                             .join(Objective, Objective.id == Step.objective_id)
                             .where(Step.id.in_(list(waiting)))).all()
        running: set[int] = set()
        for sid, state, attempts, objective_state in rows:
            w = waiting[sid]
            if w.done.done():
                continue
            if state == StepState.RUNNING:
                running.add(w.objective_id)
                continue
            if state in _QUEUED and attempts == w.attempts \
                    and objective_state == ObjectiveState.RUNNING:
                continue  # still in the queue
            w.done.set_result(StepState(state))
        now = time.monotonic()
        if running and now - self._lapsed_at >= LAPSED_EVERY_S:
            self._lapsed_at = now
            with self.db.read() as s:
                due, _ = leases.lapsed(s, sorted(running))
            if set(due) & set(waiting):  # its worker stopped: ready again, sent again
                with self.db.core(wake=False) as c:
                    leases.take_over(c, sorted(running))
