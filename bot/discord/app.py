"""The Discord edge of one process: the gateway client, the adapter, /healthz's part."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from bot.discord.adapter import DiscordAdapter
from bot.discord.client import SwarmClient
from bot.discord.endpoints import use_api, use_gateway
from bot.discord.settings import DiscordSettings
from bot.loop_thread import run_on
from bot.refs import MessageRefs
from bot.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
READY_WAIT_S = 30.0  # serve starts anyway after this; /healthz shows the gateway down


def from_environment(runtime: Runtime) -> tuple[DiscordEdge | None, list[str]]:
    """The Discord edge when DISCORD_TOKEN is set (bot/edges.py's registry calls it)."""
    settings = DiscordSettings()
    if not settings.configured:
        return None, []
    return DiscordEdge(runtime, settings), []


class DiscordEdge:
    """discord.py's client on the ingress loop (its gateway, interactions answered there within
    Discord's 3 s); the adapter on the swarm's loop, the one the edge is built on."""

    platform = "discord"

    def __init__(self, runtime: Runtime, settings: DiscordSettings, *,
                 progress_interval_s: float = 1.0) -> None:
        self.runtime, self.settings = runtime, settings
        # discord.py logs every gateway payload at DEBUG (message text, what is pasted in it):
        # keep it at INFO whatever the root level, so a payload never reaches a log line.
        logging.getLogger("discord").setLevel(logging.INFO)
        self._swarm_loop = asyncio.get_running_loop()
        self.client = SwarmClient(runtime.swarm, MessageRefs(runtime.db, "discord"),
                                  self._on_swarm)
        self.adapter = DiscordAdapter(runtime.swarm, self.client,
                                      progress_interval_s=progress_interval_s)
        self._task: asyncio.Task[None] | None = None

    def _on_swarm(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """From the client (ingress loop): run a swarm call on the swarm's loop."""
        return run_on(self._swarm_loop, coro)

    def routes(self, app: web.Application) -> None:
        """Discord comes over the gateway: no HTTP routes."""

    async def connect(self) -> None:
        assert self.settings.token is not None
        use_api(self.settings)
        await self.client.login(self.settings.token.get_secret_value())
        self.adapter.loop = asyncio.get_running_loop()
        gateway = await use_gateway(self.client, self.settings)
        self._task = asyncio.get_running_loop().create_task(self.client.connect(),
                                                            name="discord.gateway")
        ready = asyncio.ensure_future(self.client.wait_until_ready())
        await asyncio.wait({self._task, ready}, timeout=READY_WAIT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():  # a bad token, or no gateway: say it now
            ready.cancel()
            self._task.result()
        log.info("discord.serving gateway=%s ready=%s", gateway, self.client.is_ready())

    async def disconnect(self) -> None:
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5.0)

    def health(self) -> dict[str, object]:
        ws = self.client.ws
        connected = self.client.is_ready() and ws is not None and ws.open
        part: dict[str, object] = {"ok": connected, "mode": "gateway",
                                   "gateway": "connected" if connected else "disconnected"}
        if connected and math.isfinite(self.client.latency):
            part["latency_ms"] = round(self.client.latency * 1000)
        return part

    async def close(self) -> None:
        await self.adapter.close()

