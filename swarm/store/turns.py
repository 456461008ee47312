"""Requests made in one turn of the event loop, served together in one transaction."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
Q = TypeVar("Q")
R = TypeVar("R")

# At most this many requests per transaction, the rest on the next turn: a batch spares
# commits, but while it is written no other step moves. With 100 objectives at once (500 steps
# a layer) one batch held every step back; 8 gave the best wall time (bench/orchestration.py).
MOST = 8


class Turn(Generic[Q, R]):
    """Requests made during one turn of the event loop, served together on the next turn, at
    most `most` at a time. A request is served even when its waiter was cancelled meanwhile
    (a claim, an accepted output or a model call's rows are written all the same)."""

    def __init__(self, serve: Callable[[list[Q]], Awaitable[list[R | Exception]]],
                 most: int = MOST) -> None:
        self._serve = serve
        self._most = most
        self._waiting: list[tuple[Q, asyncio.Future[R]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    def submit(self, request: Q) -> asyncio.Future[R]:
        """Queue `request` without waiting (usable while the caller is being cancelled)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)
        return future

    async def __call__(self, request: Q) -> R:
        return await self.submit(request)

    def take(self) -> list[tuple[Q, asyncio.Future[R]]]:
        """Hand over what waits to be served, for another transaction to write with its own;
        that writer resolves the futures once it has committed, or gives them back."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def give_back(self, taken: list[tuple[Q, asyncio.Future[R]]]) -> None:
        """The transaction that took them rolled back: serve them in the next batch."""
        if not taken:
            return
        was_empty = not self._waiting
        self._waiting[:0] = taken
        if was_empty:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting[:self._most], self._waiting[self._most:]
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        if waiting:
            task = asyncio.get_running_loop().create_task(self._run(waiting))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run(self, waiting: list[tuple[Q, asyncio.Future[R]]]) -> None:
        try:
            results = await self._serve([request for request, _ in waiting])
        except Exception as exc:  # the transaction rolled back: every waiter sees why
            log.warning("turn.batch_failed size=%d error=%s", len(waiting), type(exc).__name__)
            results = [exc] * len(waiting)
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():  # its waiter was cancelled
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (shutdown)."""
        while self._waiting or self._batches:
            if self._batches:
                await asyncio.gather(*self._batches, return_exceptions=True)
            else:
                await asyncio.sleep(0)
