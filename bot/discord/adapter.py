"""The Discord adapter: shows swarm events in their Discord thread (the dispatcher calls it).

bot/routing.py decides what each event posts; this is how Discord posts it (a Surface). It
runs on the swarm's loop; every REST call runs on the client's (ingress) loop, so all of them
share discord.py's rate-limit buckets."""
from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import discord

from bot import picture
from bot.adapter import PermanentDeliveryError
from bot.discord import render
from bot.discord.errors import permanent
from bot.discord.render import DiscordMessage
from bot.loop_thread import run_on
from bot.progress import EditLater
from bot.routing import EventRouter
from swarm.events import Event, ObjectiveFinished
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef
from swarm.store.views import ObjectiveView

log = logging.getLogger(__name__)
T = TypeVar("T")


class NotConnected(Exception):
    """The client has not logged in yet: the dispatcher retries the delivery shortly."""


class DiscordAdapter:
    platform = "discord"
    coalesce_progress = True  # the progress message is re-rendered from the view each time

    def __init__(self, swarm: Swarm, client: discord.Client, *,
                 progress_interval_s: float = 1.0) -> None:
        self.swarm, self.client = swarm, client
        self.loop: asyncio.AbstractEventLoop | None = None  # the client's, once logged in
        self.router = EventRouter(swarm, self.platform, render, self,
                                  progress_interval_s=progress_interval_s)
        self.refs, self.progress = self.router.refs, self.router.progress

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Raises PermanentDeliveryError for what Discord will never accept (errors.py)."""
        await self.router.deliver(event, thread, key)

    async def post_results(self, event: ObjectiveFinished, thread: ThreadRef) -> None:
        for i, msg in enumerate(render.results(event)):  # very long ones: attached as a file
            await self.router.post_once(thread, event.objective_id, f"results:{i}", msg)

    async def upload_picture(self, thread: ThreadRef, objective_id: int,
                             drawing: picture.Drawing, title: str) -> tuple[str, str]:
        return await self._send(thread, DiscordMessage(), image=drawing)

    def permanent(self, exc: Exception) -> PermanentDeliveryError | None:
        return permanent(exc)

    # -- REST, on the client's loop ------------------------------------------------------------
    async def _on_client(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop is None or self.loop.is_closed() or not self.loop.is_running():
            coro.close()
            raise NotConnected("the Discord client is not logged in")
        return await run_on(self.loop, coro)

    async def _send(self, thread: ThreadRef, msg: DiscordMessage,
                    image: picture.Drawing | None = None) -> tuple[str, str]:
        async def send() -> tuple[str, str]:
            channel = self.client.get_partial_messageable(int(thread.channel_id),
                                                          guild_id=int(thread.team_id))
            kwargs: dict[str, Any] = {}
            if msg.embed is not None:
                kwargs["embed"] = msg.embed
            if (view := msg.view()) is not None:
                kwargs["view"] = view
            if image is not None:
                kwargs["file"] = discord.File(io.BytesIO(image.png), filename=image.filename,
                                              description=image.alt_text[:1024])
            elif msg.file is not None:
                name, text = msg.file
                kwargs["file"] = discord.File(io.BytesIO(text.encode()), filename=name)
            sent = await channel.send(msg.content or None, **kwargs)
            return str(sent.channel.id), str(sent.id)
        return await self._on_client(send())

    async def _edit(self, channel_id: str, message_id: str, msg: DiscordMessage) -> None:
        async def edit() -> None:
            message = self.client.get_partial_messageable(int(channel_id)) \
                .get_partial_message(int(message_id))
            await message.edit(content=msg.content or None, embed=msg.embed, view=msg.view())
        await self._on_client(edit())

    async def post(self, thread: ThreadRef, msg: DiscordMessage, objective_id: int
                   ) -> tuple[str, str]:
        return await self._send(thread, msg)

    async def edit(self, thread: ThreadRef, channel_id: str, message_id: str,
                   msg: DiscordMessage) -> None:
        await self._edit(channel_id, message_id, msg)

    async def post_progress(self, view: ObjectiveView, thread: ThreadRef) -> tuple[str, str]:
        return await self._send(thread, render.progress(view))

    async def edit_progress(self, view: ObjectiveView, thread: ThreadRef, channel: str,
                             message_id: str) -> None:
        try:
            await self._edit(channel, message_id, render.progress(view))
        except discord.RateLimited as exc:  # longer than the client sleeps: fold it in
            log.info("discord.progress_rate_limited retry_after_s=%.1f", exc.retry_after)
            raise EditLater(exc.retry_after) from exc

    async def close(self) -> None:
        await self.progress.close()  # no edit retried here: what is owed waits in the outbox
