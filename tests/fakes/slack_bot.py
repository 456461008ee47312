"""The bot as `threadswarm serve` runs it (Runtime + SlackEdge), wired to the fake Slack."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.runtime import Runtime
from bot.slack.app import SlackEdge
from bot.slack.settings import SlackSettings
from bot.web import WebServer
from tests.conftest import make_settings
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_events import SlackEvents

SECRET = "3f1c0b5e0a9d4c7e8b2a6f4d1c9e7b5a"
BOT_TOKEN = "xoxb-1000-2000-testtoken0123456789"


@dataclass
class Bot:
    runtime: Runtime
    edge: SlackEdge
    server: WebServer
    events: SlackEvents

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        await self.events.close()
        await self.server.close()
        await self.runtime.close()


async def start_bot(tmp_path: Any, url: str, api: FakeSlackAPI, *,
                    progress_interval_s: float = 0.2, rate_limit_retries: int = 3,
                    swarm_settings: dict[str, Any] | None = None, **slack: Any) -> Bot:
    """What `threadswarm serve` does, on a free port of 127.0.0.1, against the fake Slack.
    `slack` overrides SlackSettings fields (None removes one), `swarm_settings` Settings'."""
    runtime = Runtime(make_settings(tmp_path, url, offline_latency_ms=10.0,
                                    **(swarm_settings or {})), migrate=True)
    values: dict[str, Any] = {"bot_token": BOT_TOKEN, "signing_secret": SECRET,
                              "api_url": api.base_url, **slack}
    settings = SlackSettings(**{k: v for k, v in values.items() if v is not None})
    edge = SlackEdge(runtime, settings, progress_interval_s=progress_interval_s,
                     rate_limit_retries=rate_limit_retries)
    runtime.add_adapter(edge.adapter)
    await runtime.swarm.recover()
    runtime.start()
    server = WebServer(runtime, [edge])
    await server.start("127.0.0.1", 0)
    return Bot(runtime, edge, server,
               SlackEvents(f"http://127.0.0.1:{server.port}/slack/events", SECRET))
