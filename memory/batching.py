"""Coalesces concurrent encode requests of one event loop into shared, bounded batches."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np


class EncodeBatcher:
    """Queues requests; one drainer task encodes up to `max_texts` queued texts per thread call.

    Many small concurrent requests (the swarm remembers each step result in its own task)
    become one model call, and a huge request is cut into rounds so that a recall arriving
    meanwhile waits for one round, not for the whole import.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_texts: int) -> None:
        self._encode = encode
        self._max_texts = max_texts
        self._queue: deque[tuple[list[str], asyncio.Future[np.ndarray]]] = deque()
        self._drainer: asyncio.Task[None] | None = None

    async def encode(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        pieces = []
        for start in range(0, len(texts), self._max_texts):
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append((texts[start : start + self._max_texts], future))
            pieces.append(future)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        parts = await asyncio.gather(*pieces)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _drain(self) -> None:
        while self._queue:
            batch: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0][0]) <= self._max_texts):
                texts, future = self._queue.popleft()
                if future.cancelled():
                    continue
                batch.append((texts, future))
                count += len(texts)
            if not batch:
                continue
            try:
                vectors = await asyncio.to_thread(
                    self._encode, [text for texts, _ in batch for text in texts]
                )
            except Exception as exc:  # every waiter of this round learns why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            at = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(vectors[at : at + len(texts)])
                at += len(texts)
