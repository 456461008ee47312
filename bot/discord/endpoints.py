"""Where discord.py talks to: Discord itself, or DISCORD_API_URL / DISCORD_GATEWAY_URL.

discord.py has no per-client setting for either. Its REST routes are built from the class
attribute `discord.http.Route.BASE` (the one its own `_set_api_version` rewrites), and a
`Client` opens the gateway at the class attribute `DiscordWebSocket.DEFAULT_GATEWAY` (only
`AutoShardedClient` asks `GET /gateway/bot`; resumes then use READY's resume_gateway_url).
Setting those two attributes, once per process before login, is the least we can touch: one
process talks to one Discord, and no private method is replaced."""
from __future__ import annotations

import discord
import yarl

from bot.discord.settings import DiscordSettings


def use_api(settings: DiscordSettings) -> None:
    """REST (and interaction callbacks, webhooks) from here on go to DISCORD_API_URL."""
    discord.http.Route.BASE = settings.api_base


async def use_gateway(client: discord.Client, settings: DiscordSettings) -> str:
    """The gateway the client connects to: DISCORD_GATEWAY_URL, else the URL the REST API
    names (`GET /gateway/bot`, asked through the logged-in client). Returns it."""
    url = settings.gateway_url
    if url is None:
        _, url, _ = await client.http.get_bot_gateway()
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    return url
