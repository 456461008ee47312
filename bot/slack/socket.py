"""Socket Mode: events over a websocket the bot opens to Slack (no public URL needed)."""
from __future__ import annotations

import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)


class SocketMode:
    """Bolt's aiohttp Socket Mode handler: it asks `apps.connections.open` (through the app's
    client, so SLACK_API_URL applies) for a websocket URL, acks each envelope after the app
    has acked it, and reconnects on its own."""

    def __init__(self, app: AsyncApp, app_token: str, *, ping_interval_s: float = 10) -> None:
        self.app, self._app_token, self.ping_interval_s = app, app_token, ping_interval_s
        self.handler: AsyncSocketModeHandler | None = None

    async def connect(self) -> None:
        # The handler opens an aiohttp session as it is built: build it inside the loop.
        self.handler = AsyncSocketModeHandler(self.app, self._app_token,
                                              ping_interval=self.ping_interval_s)
        await self.handler.connect_async()
        log.info("slack.socket_mode_connected")

    async def close(self) -> None:
        if self.handler is not None:
            await self.handler.close_async()
            self.handler = None
