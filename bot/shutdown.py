"""Bounded waits for shutdown: a task that ignores its cancel must not keep the process alive."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


async def wait_bounded(tasks: Iterable[asyncio.Future[Any]], timeout_s: float, what: str) -> bool:
    """Wait at most `timeout_s` for the tasks to end; log and return False if some did not."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, timeout_s))
    for task in tasks:  # their errors were theirs to log; retrieved, so asyncio does not
        if task.done() and not task.cancelled():
            task.exception()
    if pending:
        log.warning("shutdown.timed_out what=%s tasks=%d timeout_s=%.1f", what, len(pending),
                    timeout_s)
    return not pending


async def cancel_bounded(tasks: Iterable[asyncio.Future[Any]], timeout_s: float,
                         what: str) -> bool:
    """Cancel the tasks and wait at most `timeout_s` for them to end."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    return await wait_bounded(tasks, timeout_s, what)


async def run_bounded(coro: Coroutine[Any, Any, Any], timeout_s: float, what: str) -> bool:
    """Run a shutdown step for at most `timeout_s`; past that it is cancelled and left behind.
    Its errors are logged, not raised: the next shutdown step still runs."""
    task = asyncio.get_running_loop().create_task(coro)
    if not await wait_bounded([task], timeout_s, what):
        task.cancel()
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("shutdown.failed what=%s error=%s", what, type(exc).__name__)
        return False
    return True
