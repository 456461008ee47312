"""Start an aiohttp app on a free port of 127.0.0.1: the base of every fake server here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web


async def serve_locally(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


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
