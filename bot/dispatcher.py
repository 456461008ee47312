"""The outbox dispatcher: delivers events in order per thread, retries, coalesces progress."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from bot.adapter import ChatAdapter, delivery_key, thread_from_key
from swarm.db import Database
from swarm.models import OutboxEvent
from swarm.outbox import mark_delivered, mark_failed, pending, to_event

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, db: Database, adapters: list[ChatAdapter], *, poll_s: float = 1.0,
                 max_backoff_s: float = 60.0) -> None:
        self.db = db
        self.adapters = {a.platform: a for a in adapters}
        self.poll_s, self.max_backoff_s = poll_s, max_backoff_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one drain at a time, or a row could go out twice
        db.on_commit(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.drain()
            except Exception:  # a database hiccup must not kill delivery; the rows wait
                log.exception("dispatcher.drain_failed")

    async def drain(self) -> int:
        """Deliver everything that is due; returns how many rows were settled."""
        if not self.adapters:
            return 0
        async with self._lock:
            return await self._drain()

    def has_pending(self) -> bool:
        with self.db.read() as s:
            return bool(pending(s, list(self.adapters), limit=1))

    async def _drain(self) -> int:
        with self.db.read() as s:
            rows = pending(s, list(self.adapters))
            s.expunge_all()
        by_thread: dict[str, list[OutboxEvent]] = defaultdict(list)
        for row in rows:
            by_thread[row.thread_key].append(row)
        done = await asyncio.gather(*(self._deliver_thread(k, v) for k, v in by_thread.items()))
        return sum(done)

    async def _deliver_thread(self, thread_key: str, rows: list[OutboxEvent]) -> int:
        adapter = self.adapters[rows[0].platform]
        thread = thread_from_key(thread_key)
        settled = 0
        for i, row in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if (adapter.coalesce_progress and row.progress and nxt is not None and nxt.progress
                    and nxt.objective_id == row.objective_id):
                self._settle([row.id])  # the next progress update shows this one's change too
                settled += 1
                continue
            try:
                await adapter.deliver(to_event(row), thread, delivery_key(row.id))
            except Exception as exc:
                backoff = min(self.max_backoff_s, 2.0 ** row.attempts)
                log.warning("dispatcher.delivery_failed thread=%s kind=%s attempt=%d error=%s",
                            thread_key, row.kind, row.attempts + 1, type(exc).__name__)
                with self.db.tx() as s:
                    mark_failed(s, row.id, f"{type(exc).__name__}: {exc}", backoff)
                return settled  # keep order: later events of this thread wait for this one
            self._settle([row.id])
            settled += 1
        return settled

    def _settle(self, ids: list[int]) -> None:
        with self.db.sessions.begin() as s:  # no wake-up: settling creates no new work
            mark_delivered(s, ids)
