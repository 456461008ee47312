"""One progress message per objective, posted once, then edited at most about once a second.

Platform-neutral: an edge gives it how to post and how to edit a rendered view (Slack's
chat.postMessage / chat.update, Discord's message create / edit); the throttle, the trailing
edit and their retries are the same everywhere."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

from bot.refs import PROGRESS, MessageRefs
from bot.shutdown import cancel_bounded
from swarm.store.models import ThreadRef
from swarm.store.outbox import reopen_latest
from swarm.store.views import ObjectiveView

log = logging.getLogger(__name__)
TRAILING_ATTEMPTS = 5
CLOSE_S = 5.0  # bound of the wait at shutdown


class EditLater(Exception):
    """Raised by an Edit the platform asked to wait longer for than the edge will sleep (e.g.
    discord.py's RateLimited past max_ratelimit_timeout): the edit is folded into the trailing
    one, `after_s` later, instead of holding up the thread's deliveries (a trailing edit
    refused again is retried with its backoff, a bounded number of times)."""

    def __init__(self, after_s: float) -> None:
        super().__init__(f"edit again in {after_s:.1f}s")
        self.after_s = after_s


# Post a rendered view in the thread: returns (channel id, message id).
Post = Callable[[ObjectiveView, ThreadRef], Awaitable[tuple[str, str]]]
# Edit the message (channel id, message id) to show the view.
Edit = Callable[[ObjectiveView, ThreadRef, str, str], Awaitable[None]]


class ProgressMessages:
    """Edits are throttled per thread; an edit that comes too soon is folded into one trailing
    edit at the end of the interval, rendered from the view at that moment, so the latest state
    always shows. Edits of one thread are serialised, so an older render never lands last."""

    def __init__(self, refs: MessageRefs, view: Callable[[int], ObjectiveView | None],
                 post: Post, edit: Edit, *, interval_s: float = 1.0) -> None:
        self.refs, self.view, self.post, self.edit = refs, view, post, edit
        self.interval_s = interval_s
        self._last: dict[str, float] = {}  # thread key -> when the platform answered an edit
        self._dirty: dict[str, set[int]] = {}  # thread key -> objectives owed an edit
        self._trailing: dict[str, asyncio.Task[None]] = {}
        # A thread's lock lives while someone holds or waits for it: nothing piles up.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = \
            weakref.WeakValueDictionary()

    async def show(self, objective_id: int, thread: ThreadRef, *, create: bool) -> None:
        """Bring the objective's progress message up to date; post it first if `create`.
        Raises when the platform refuses, so the dispatcher retries the event."""
        key = thread.key
        async with self._lock(key):
            ref = self.refs.get(objective_id, PROGRESS)
            if ref is None:
                if create:
                    await self._post(objective_id, thread)
                return
            wait = self._last.get(key, float("-inf")) + self.interval_s - time.monotonic()
            if wait <= 0 and key not in self._trailing:
                try:
                    await self._edit(objective_id, thread, ref.channel_id, ref.message_id)
                    return
                except EditLater as later:
                    wait = later.after_s
            self._dirty.setdefault(key, set()).add(objective_id)
            if key not in self._trailing:
                task = asyncio.get_running_loop().create_task(self._trail(thread, wait))
                self._trailing[key] = task

    def _lock(self, key: str) -> asyncio.Lock:
        if (lock := self._locks.get(key)) is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _sent(self, key: str) -> None:
        now = time.monotonic()
        self._last[key] = now
        if len(self._last) > 1000:  # an edit older than the interval throttles nothing
            for old in [k for k, at in self._last.items() if at < now - self.interval_s]:
                del self._last[old]

    async def close(self) -> None:
        """Stop at once, also when the platform does not answer: the edits still owed are left
        in the outbox (each objective's latest row reopened) for the next process to make."""
        await cancel_bounded(list(self._trailing.values()), CLOSE_S, "progress.close")
        owed = sorted({oid for oids in self._dirty.values() for oid in oids})
        self._dirty.clear()
        if owed:
            with self.refs.db.tx(wake=False) as s:
                reopened = reopen_latest(s, self.refs.platform, owed)
            log.info("progress.left_owed platform=%s objectives=%d rows=%d", self.refs.platform,
                     len(owed), reopened)

    async def _post(self, objective_id: int, thread: ThreadRef) -> None:
        view = self.view(objective_id)
        if view is None:
            return
        channel, message_id = await self.post(view, thread)
        self.refs.save(objective_id, PROGRESS, channel, message_id)
        self._sent(thread.key)

    async def _edit(self, objective_id: int, thread: ThreadRef, channel: str, ts: str) -> None:
        view = self.view(objective_id)  # rendered now, inside the thread's lock
        if view is None:
            return
        await self.edit(view, thread, channel, ts)
        # Counted from the answer: the next edit then reaches it at least an interval later,
        # however long this one took to get there.
        self._sent(thread.key)

    async def _trail(self, thread: ThreadRef, wait: float) -> None:
        key = thread.key
        try:
            for attempt in range(TRAILING_ATTEMPTS):
                await asyncio.sleep(max(0.0, wait))
                async with self._lock(key):
                    # an objective stays owed until its edit is answered: close() leaves
                    # what is owed, also an edit cancelled on its way, to the next process
                    owed = self._dirty.setdefault(key, set())
                    for oid in sorted(owed):
                        if (ref := self.refs.get(oid, PROGRESS)) is not None:
                            try:
                                await self._edit(oid, thread, ref.channel_id, ref.message_id)
                            except Exception as exc:
                                log.warning("progress.edit_failed platform=%s objective=%s "
                                            "attempt=%d error=%s", self.refs.platform, oid,
                                            attempt + 1, type(exc).__name__)
                                continue
                        owed.discard(oid)
                    if not owed:
                        del self._dirty[key]
                        return
                wait = self.interval_s * 2 ** (attempt + 1)
        finally:
            self._trailing.pop(key, None)
