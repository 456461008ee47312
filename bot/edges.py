"""The chat edges `threadswarm serve` can run, and what each offers the shared web server.

An edge is one platform's folder under bot/ (bot/slack/, bot/discord/). `serve` builds
every edge whose platform is configured, from this registry, and runs them side by side on one
swarm: a new platform is one folder and one line here.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from bot.adapter import ChatAdapter
from bot.runtime import Runtime


class Edge(Protocol):
    platform: str
    adapter: ChatAdapter  # outbound: the dispatcher calls it on the swarm's loop

    def routes(self, app: web.Application) -> None:
        """Add the edge's HTTP routes (events, OAuth) to the shared server."""

    async def connect(self) -> None:
        """On the ingress loop, once HTTP listens: open what the edge keeps open (Socket
        Mode, a gateway)."""

    async def disconnect(self) -> None:
        """On the ingress loop: close what connect() opened."""

    def health(self) -> dict[str, object]:
        """What /healthz shows of this edge; "ok": False makes it answer 503."""

    async def close(self) -> None:
        """On the swarm's loop, last (the dispatcher has stopped): close the adapter, leaving
        what it still owes in the outbox."""


# (edge or None when the platform is not configured, sentences saying what keeps it from
# starting when it is configured only in part)
Build = Callable[[Runtime], tuple[Edge | None, list[str]]]

# platform -> "module:function", imported only when serve runs, so each SDK loads only then
EDGES: dict[str, str] = {
    "slack": "bot.slack.app:from_environment",
    "discord": "bot.discord.app:from_environment",
}


def build_edges(runtime: Runtime) -> tuple[list[Edge], list[str]]:
    """Every configured edge, and what keeps any of them from starting."""
    edges: list[Edge] = []
    problems: list[str] = []
    for platform, target in EDGES.items():
        module, _, name = target.partition(":")
        build: Build = getattr(importlib.import_module(module), name)
        edge, found = build(runtime)
        problems += [f"{platform}: {p}" for p in found]
        if edge is not None:
            edges.append(edge)
    if not edges and not problems:
        problems.append("No chat platform is configured: set SLACK_BOT_TOKEN and "
                        "SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode), or "
                        "DISCORD_TOKEN; see the README's Slack and Discord sections.")
    return edges, problems
