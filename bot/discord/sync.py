"""`threadswarm discord-sync [--guild ID]`: register the `/swarm` app command with Discord.

Explicit, not on every start: Discord rate-limits command registration, and a global sync
takes a while to reach every guild (a guild sync is instant, for trying it out)."""
from __future__ import annotations

import argparse

import discord
from discord import app_commands

from bot.discord.client import swarm_command
from bot.discord.endpoints import use_api
from bot.discord.settings import DiscordSettings


async def sync_commands(settings: DiscordSettings, guild_id: int | None) -> list[str]:
    """Overwrite the application's commands (globally, or in one guild) with `/swarm`."""
    assert settings.token is not None
    use_api(settings)
    client = discord.Client(intents=discord.Intents.none())
    tree = app_commands.CommandTree(client)
    tree.add_command(swarm_command())
    try:
        await client.login(settings.token.get_secret_value())
        guild = discord.Object(id=guild_id) if guild_id is not None else None
        if guild is not None:
            tree.copy_global_to(guild=guild)
        synced = await tree.sync(guild=guild)
    finally:
        await client.close()
    return [c.name for c in synced]


async def cmd_discord_sync(args: argparse.Namespace) -> int:
    settings = DiscordSettings()
    if not settings.configured:
        print("Set DISCORD_TOKEN (your application's bot token); see the README's Discord "
              "section.")
        return 2
    names = await sync_commands(settings, args.guild)
    where = f"guild {args.guild}" if args.guild is not None else "every guild (global; it can " \
                                                                   "take up to an hour to show)"
    print(f"Registered {', '.join('/' + n for n in names)} in {where}.")
    return 0
