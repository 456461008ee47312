"""The outbox dispatcher: delivers events in order per thread, retries, dead-letters, prunes.

It wakes at once for a commit in its own process, for a NOTIFY from another process on
PostgreSQL (swarm/store/notify.py), and otherwise every `poll_s`: the poll brings back rows
whose retry is due, threads whose lease lapsed (their dispatcher died), and anything a lost
notification would have announced. Any number of dispatchers may share a database (web
replicas): the per-thread claim in swarm/store/outbox.py keeps each row delivered once and
each thread in order."""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import timedelta

from bot.adapter import ChatAdapter, PermanentDeliveryError, delivery_key, thread_from_key
from bot.shutdown import cancel_bounded, wait_bounded
from swarm.events import Notice
from swarm.redact import redact
from swarm.store.db import Database
from swarm.store.models import OutboxEvent, ThreadRef, utcnow
from swarm.store.notify import listen
from swarm.store.outbox import (
    claim,
    due_threads,
    has_due,
    mark_dead,
    mark_delivered,
    mark_failed,
    prune_delivered,
    release,
    renew,
    to_event,
)

log = logging.getLogger(__name__)
THREADS_PER_DRAIN = 100  # threads delivered side by side in one drain, oldest head first
ROWS_PER_CLAIM = 100  # a thread's rows delivered in one drain; the rest in the next
PRUNE_BATCH, PRUNE_BATCHES = 1000, 10  # short transactions; what is left waits for next time


class Dispatcher:
    """Delivers each thread's open outbox rows in id order, threads side by side. A failed row
    is retried with backoff (1 s, x4 per attempt, at most `max_backoff_s`) and holds back its
    thread's later rows meanwhile; after `max_attempts`, or at once for an error the adapter
    calls permanent or an event this version cannot read, the row is dead: kept, logged, told
    to the thread when the thread still takes posts, and its thread goes on."""

    def __init__(self, db: Database, adapters: list[ChatAdapter], *, poll_s: float = 1.0,
                 max_attempts: int = 8, max_backoff_s: float = 600.0, lease_s: float = 15.0,
                 keep_delivered_s: float = 24 * 3600.0, prune_every_s: float = 600.0,
                 stop_timeout_s: float = 5.0) -> None:
        self.db = db
        self.adapters = {a.platform: a for a in adapters}
        self.poll_s, self.max_attempts, self.max_backoff_s = poll_s, max_attempts, max_backoff_s
        self.lease_s, self.stop_timeout_s = lease_s, stop_timeout_s
        self.keep_delivered_s, self.prune_every_s = keep_delivered_s, prune_every_s
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # this dispatcher's lease name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while other processes' commits wake this one
        self._stopping = False
        self._next_prune = 0.0  # time.monotonic() of the next prune
        self._lock = asyncio.Lock()  # one drain at a time in this process
        db.on_commit(self.wake)

    @property
    def listen_name(self) -> str:
        """The application_name of this dispatcher's listening connection."""
        return f"threadswarm-dispatcher-{self.owner}"

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())
        if not self.db.sqlite:
            self._listener = loop.create_task(listen(self.db.engine, self.wake,
                                                       self.listen_name, self.listening))

    async def stop(self) -> None:
        """End the loop: a drain in progress gets `stop_timeout_s` to finish, then is cancelled
        and gets as long again; past that the loop is left behind, logged, and stop returns."""
        self._stopping = True  # a flag, not only a cancel: wait_for (3.11) can swallow a cancel
        self._wake.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            await cancel_bounded([listener], self.stop_timeout_s, "dispatcher.listen")
        task, self._task = self._task, None
        if task is None:
            return
        if not await wait_bounded([task], self.stop_timeout_s, "dispatcher.loop"):
            await cancel_bounded([task], self.stop_timeout_s, "dispatcher.loop")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._wake.clear()
            try:
                await self.drain()
                self._prune_when_due()
            except Exception:  # a database hiccup must not kill delivery; the rows wait
                log.exception("dispatcher.drain_failed")

    async def drain(self) -> int:
        """Deliver everything that is due; returns how many rows were settled."""
        if not self.adapters:
            return 0
        async with self._lock:
            with self.db.read() as s:
                threads = due_threads(s, list(self.adapters), self.owner, THREADS_PER_DRAIN)
            done = await asyncio.gather(*(self._deliver_thread(k) for k in threads),
                                        return_exceptions=True)
        for thread_key, result in zip(threads, done, strict=True):
            if isinstance(result, BaseException):  # its rows wait for the next drain
                log.warning("dispatcher.thread_failed thread=%s error=%s", thread_key,
                            type(result).__name__)
        return sum(n for n in done if isinstance(n, int))

    def has_pending(self) -> bool:
        """True while a row is due, also one another dispatcher holds: this one takes it over
        when that one's lease runs out (it crashed) unless that one delivers it first."""
        with self.db.read() as s:
            return has_due(s, list(self.adapters))

    async def _deliver_thread(self, thread_key: str) -> int:
        with self.db.tx(wake=False) as s:  # no wake-up: claiming creates no new work
            rows = claim(s, thread_key, self.owner, self.lease_s, ROWS_PER_CLAIM)
            s.expunge_all()
        if not rows:
            return 0  # another dispatcher holds the thread
        # The lease is short, so a crashed process holds its threads for seconds only, and it
        # is renewed while the thread is delivered, however long Slack takes.
        heartbeat = asyncio.get_running_loop().create_task(self._keep_lease(thread_key))
        try:
            return await self._deliver_rows(thread_from_key(thread_key), rows)
        finally:  # also when cancelled: another process need not wait for the lease to end
            heartbeat.cancel()
            with self.db.tx(wake=False) as s:
                release(s, thread_key, self.owner)

    async def _keep_lease(self, thread_key: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                with self.db.tx(wake=False) as s:
                    renew(s, thread_key, self.owner, self.lease_s)
            except Exception as exc:  # the next beat tries again; the lease has time left
                log.warning("dispatcher.renew_failed thread=%s error=%s", thread_key,
                            type(exc).__name__)

    async def _deliver_rows(self, thread: ThreadRef, rows: list[OutboxEvent]) -> int:
        adapter = self.adapters[rows[0].platform]
        now = utcnow()
        for i, row in enumerate(rows):
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return i  # waits for its retry; order per thread
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if (adapter.coalesce_progress and row.progress and nxt is not None and nxt.progress
                    and nxt.objective_id == row.objective_id):
                self._settle(row)  # the next progress update shows this one's change too
            elif not await self._deliver(adapter, thread, row):
                return i  # keep order: later events of this thread wait for this one
        return len(rows)

    async def _deliver(self, adapter: ChatAdapter, thread: ThreadRef, row: OutboxEvent) -> bool:
        """Deliver one row; True once it is settled (delivered or dead), False if it waits."""
        try:
            event = to_event(row)
        except (KeyError, TypeError, ValueError) as exc:  # a kind this version does not know
            await self._dead(adapter, thread, row, f"unreadable event ({type(exc).__name__})",
                             notify=True, detail=str(exc))
            return True
        try:
            await adapter.deliver(event, thread, delivery_key(row.id))
        except PermanentDeliveryError as exc:
            await self._dead(adapter, thread, row, exc.reason, notify=exc.notify)
            return True
        except Exception as exc:
            attempt = row.attempts + 1
            if attempt >= self.max_attempts:
                await self._dead(adapter, thread, row, f"{type(exc).__name__} after {attempt} "
                                 f"attempts", notify=True, detail=str(exc))
                return True
            backoff = min(self.max_backoff_s, 4.0 ** row.attempts)
            log.warning("dispatcher.delivery_failed row=%d thread=%s kind=%s attempt=%d "
                        "retry_in_s=%.0f error=%s", row.id, row.thread_key, row.kind, attempt,
                        backoff, type(exc).__name__)
            with self.db.tx(wake=False) as s:
                mark_failed(s, row.id, redact(f"{type(exc).__name__}: {exc}"), backoff)
            return False
        self._settle(row)
        return True

    def _settle(self, row: OutboxEvent) -> None:
        with self.db.tx(wake=False) as s:  # no wake-up: settling creates no new work
            mark_delivered(s, [row.id])

    async def _dead(self, adapter: ChatAdapter, thread: ThreadRef, row: OutboxEvent,
                    reason: str, *, notify: bool, detail: str = "") -> None:
        """`reason` is short and safe to show; `detail` (an error's text) is only stored."""
        with self.db.tx(wake=False) as s:
            mark_dead(s, row.id, redact(f"{reason}: {detail}") if detail else reason)
        log.warning("dispatcher.dead_letter row=%d thread=%s kind=%s attempts=%d reason=%s",
                    row.id, row.thread_key, row.kind, row.attempts + 1, reason)
        if notify and row.objective_id is not None:
            await self._notify(adapter, thread, row, row.objective_id, reason)

    async def _notify(self, adapter: ChatAdapter, thread: ThreadRef, row: OutboxEvent,
                      objective_id: int, reason: str) -> None:
        """Tell the thread once, best effort: the notice is no outbox row, so it never loops."""
        text = f"An update ({row.kind}) could not be posted in this thread: {reason}."
        try:
            await adapter.deliver(Notice(objective_id, text), thread,
                                  f"{delivery_key(row.id)}:dead")
        except Exception as exc:
            log.warning("dispatcher.dead_notice_failed row=%d thread=%s error=%s", row.id,
                        row.thread_key, type(exc).__name__)

    def _prune_when_due(self) -> None:
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self.prune_every_s
            self.prune()

    def prune(self) -> int:
        """Delete rows delivered more than `keep_delivered_s` ago, in batches; dead rows stay."""
        before = utcnow() - timedelta(seconds=self.keep_delivered_s)
        pruned = 0
        for _ in range(PRUNE_BATCHES):
            with self.db.tx(wake=False) as s:
                n = prune_delivered(s, before, PRUNE_BATCH)
            pruned += n
            if n < PRUNE_BATCH:
                break
        if pruned:
            log.info("dispatcher.pruned rows=%d", pruned)
        return pruned
