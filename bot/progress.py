"""One progress message per objective, posted once, then edited at most about once a second.

Platform-neutral: an edge gives it how to post and how to edit a rendered view (Slack's
chat.postMessage / chat.update, Discord's message create / edit); the throttle, the trailing
edit and their retries are the same everywhere.

Several processes may edit one message (web replicas: a thread's outbox rows go to whichever
dispatcher claims them, and the claim ends with each drain). So both halves of the rule live
in the database, not in process memory: the message's ref is stored once (posted by the one
dispatcher that holds the thread's first progress row), and its last edit time is stored on
that ref, where an edit takes its turn with a conditional update (`MessageRefs.take_edit_turn`):
of two processes due to edit within one interval, one edits and the other folds its change
into a trailing edit after the interval, rendered from the database then, so the latest state
shows and the platform sees at most one edit per interval from all of them. Partitioning
instead (one process per thread) would need a claim that outlives the thread's rows; the
stored time needs nothing more than the ref it sits on. The processes' clocks are compared,
so a skew between machines shifts the spacing by as much."""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from bot.refs import PROGRESS, MessageRefs
from bot.shutdown import cancel_bounded
from swarm.store.models import MessageRef, ThreadRef
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
    """Edits are throttled per message, across processes; an edit that comes too soon is folded
    into one trailing edit per thread at the end of the interval, rendered from the view at
    that moment, so the latest state always shows. In a process, edits of one thread are
    serialised, so an older render never lands last."""

    def __init__(self, refs: MessageRefs, view: Callable[[int], ObjectiveView | None],
                 post: Post, edit: Edit, *, interval_s: float = 1.0) -> None:
        self.refs, self.view, self.post, self.edit = refs, view, post, edit
        self.interval_s = interval_s
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
            wait = 0.0  # a trailing edit of the thread is on its way: it takes this along
            if key not in self._trailing and \
                    (wait := self.refs.take_edit_turn(ref, self.interval_s)) <= 0:
                try:
                    await self._edit(objective_id, thread, ref)
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
        self.refs.save(objective_id, PROGRESS, channel, message_id, edited=True)

    async def _edit(self, objective_id: int, thread: ThreadRef, ref: MessageRef) -> None:
        """Make the edit whose turn the caller took."""
        view = self.view(objective_id)  # rendered now, inside the thread's lock
        if view is None:
            return
        await self.edit(view, thread, ref.channel_id, ref.message_id)
        # Counted from the answer: the next edit then reaches it at least an interval later,
        # however long this one took to get there.
        self.refs.edited(ref)

    async def _trail(self, thread: ThreadRef, wait: float) -> None:
        key = thread.key
        try:
            for attempt in range(TRAILING_ATTEMPTS):
                await asyncio.sleep(max(0.0, wait))
                async with self._lock(key):
                    # an objective stays owed until its edit is answered: close() leaves
                    # what is owed, also an edit cancelled on its way, to the next process
                    owed = self._dirty.setdefault(key, set())
                    wait = self.interval_s * 2 ** (attempt + 1)  # after a refused edit
                    for oid in sorted(owed):
                        if (ref := self.refs.get(oid, PROGRESS)) is not None:
                            if (turn := self.refs.take_edit_turn(ref, self.interval_s)) > 0:
                                wait = min(wait, turn)  # another process edited it just now
                                continue
                            try:
                                await self._edit(oid, thread, ref)
                            except Exception as exc:
                                log.warning("progress.edit_failed platform=%s objective=%s "
                                            "attempt=%d error=%s", self.refs.platform, oid,
                                            attempt + 1, type(exc).__name__)
                                continue
                        owed.discard(oid)
                    if not owed:
                        del self._dirty[key]
                        return
        finally:
            self._trailing.pop(key, None)
