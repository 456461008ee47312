"""Start an aiohttp app on a free port of 127.0.0.1: the base of every fake server here."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web


async def serve_locally(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def wait_until(check: Callable[[], Any], timeout: float, what: str,
                     seen: Callable[[], object] = lambda: "") -> Any:
    """Poll `check` until it returns something true, and return that; past `timeout` fail,
    saying what was awaited and what the fake had `seen` (e.g. the calls it got)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; seen: {seen()}")


@dataclass
class LocalServer:
    """A fake provider API on 127.0.0.1; a subclass adds its routes in `routes`."""

    port: int = field(default=0, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner, self.port = await serve_locally(app, shutdown_timeout=0.5)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
