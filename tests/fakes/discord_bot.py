"""The bot as `threadswarm serve` runs it (Runtime + DiscordEdge), wired to the fake Discord."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.discord.app import DiscordEdge
from bot.discord.settings import DiscordSettings
from bot.runtime import Runtime
from bot.web import WebServer
from tests.conftest import make_settings
from tests.fakes.discord_server import TOKEN, FakeDiscord


@dataclass
class DiscordBot:
    runtime: Runtime
    edge: DiscordEdge
    server: WebServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        await self.server.close()
        await self.runtime.close()


async def start_discord_bot(tmp_path: Any, url: str, fake: FakeDiscord, *,
                            progress_interval_s: float = 0.2, gateway_url: str | None = None,
                            **overrides: Any) -> DiscordBot:
    """What `threadswarm serve` does with DISCORD_TOKEN set, against the fake Discord: the
    REST base comes from DISCORD_API_URL, the gateway from the fake's GET /gateway/bot (or
    `gateway_url`, as DISCORD_GATEWAY_URL)."""
    runtime = Runtime(make_settings(tmp_path, url, offline_latency_ms=10.0, **overrides),
                      migrate=True)
    settings = DiscordSettings(token=TOKEN, api_url=fake.api_url, gateway_url=gateway_url)
    edge = DiscordEdge(runtime, settings, progress_interval_s=progress_interval_s)
    runtime.add_adapter(edge.adapter)
    await runtime.swarm.recover()
    runtime.start()
    server = WebServer(runtime, [edge])
    await server.start("127.0.0.1", 0)
    await fake.connected()
    return DiscordBot(runtime, edge, server)
