"""An event loop in its own thread, so a chat edge's acks never queue behind the swarm.

Slack drops a request that is not acked within 3 s, and Discord an interaction within 3 s. On
one loop, every ack waits for whatever the swarm is doing (planning, LLM-layer overhead, SQLite
commits): under a burst of mentions that wait grows without bound. Here the platform's SDK and
its transport (HTTP, Socket Mode, a gateway) run on a second loop that does little besides
verifying and acking; the work hops to the swarm's loop.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


async def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on `loop` (another thread's) and await its result from the current loop."""
    future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
    return await asyncio.wrap_future(future)


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await run_on(self.loop, coro)

    async def stop(self) -> None:
        """Cancel what still runs on the loop (e.g. listeners awaiting the swarm), then end it."""
        if not self.running:
            self.loop.close()
            return
        await self.run(self._cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self.loop.close()

    @staticmethod
    async def _cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
