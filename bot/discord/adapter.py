"""The Discord adapter: shows swarm events in their Discord thread (the dispatcher calls it).

It runs on the swarm's loop; every REST call runs on the client's (ingress) loop, so all of
them share discord.py's rate-limit buckets."""
from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import discord

from bot import picture
from bot.discord import render
from bot.discord.errors import permanent
from bot.discord.render import DiscordMessage
from bot.loop_thread import run_on
from bot.progress import EditLater, ProgressMessages
from bot.refs import MessageRefs, approval_key
from swarm.events import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalReminder,
    ApprovalRequested,
    Digest,
    DriftDetected,
    Event,
    Notice,
    ObjectiveAccepted,
    ObjectiveFinished,
    ObjectiveStateChanged,
    PictureRequested,
    PlanProposed,
    QuestionAsked,
)
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
        self.refs = MessageRefs(swarm.db, self.platform)
        self.progress = ProgressMessages(self.refs, swarm.view, self._post_progress,
                                         self._edit_progress, interval_s=progress_interval_s)

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Raises PermanentDeliveryError for what Discord will never accept (errors.py)."""
        try:
            await self._deliver(event, thread, key)
        except Exception as exc:
            if (gone := permanent(exc)) is not None:
                raise gone from exc
            raise

    async def _deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Every message is posted once: each has a message ref (by objective, or by delivery
        `key` and part), and a retry of a partly delivered event skips what it finds."""
        oid = event.objective_id
        shown = self.swarm.root_of(oid)  # a team's progress shows in its tree's message
        match event:
            case ObjectiveAccepted():
                await self._post_once(thread, oid, "accepted", render.accepted(event))
            case PlanProposed():
                await self._post_once(thread, oid, approval_key(event.approval_id),
                                      render.plan(event))
            case ApprovalRequested():
                await self._post_once(thread, oid, approval_key(event.approval_id),
                                      render.approval(event))
                await self.progress.show(shown, thread, create=False)
            case ApprovalDecided():
                await self._decided(event, thread, key)
                plan_approved = event.kind == "plan" and event.approved
                await self.progress.show(shown, thread, create=plan_approved)
            case QuestionAsked():
                await self._post_once(thread, oid, f"question:{event.question_id}",
                                      render.question(event))
                await self.progress.show(shown, thread, create=True)
            case ObjectiveStateChanged():
                await self._post_once(thread, oid, f"{key}:0", render.state_changed(event))
                await self.progress.show(shown, thread, create=False)
            case ObjectiveFinished():  # results first: a refused progress edit loses none
                for i, msg in enumerate(render.results(event)):
                    await self._post_once(thread, oid, f"results:{i}", msg)
                await self.progress.show(shown, thread, create=False)
            case Notice():
                await self._post_once(thread, oid, f"{key}:0", render.notice(event))
            case PictureRequested():
                pass  # the picture, below, is all it shows
            case ApprovalReminder() | Digest():
                await self._post_once(thread, oid, f"{key}:0", render.scheduled(event))
            case ApprovalExpired():  # the request's message loses its buttons, says it expired
                ref = self.refs.get(oid, approval_key(event.approval_id))
                if ref is None:
                    await self._post_once(thread, oid, f"{key}:0", render.scheduled(event))
                else:
                    await self._edit(ref.channel_id, ref.message_id, render.scheduled(event))
                await self.progress.show(oid, thread, create=False)
            case DriftDetected():
                await self._post_once(thread, oid, approval_key(event.approval_id),
                                      render.scheduled(event))
                await self.progress.show(oid, thread, create=False)
            case _ if event.progress:  # step started, revised, finished, failed, retried
                await self.progress.show(shown, thread, create=True)
            case _:
                log.info("discord.event_without_message kind=%s objective=%s",
                         event.event_type, oid)
                await self.progress.show(shown, thread, create=False)
        await self._picture(event, thread, key)

    async def _picture(self, event: Event, thread: ThreadRef, key: str) -> None:
        """The plan's picture, attached in the thread after the event's text (its alt text as
        the attachment's description). One that cannot be drawn, or that Discord refuses for
        good, is logged and left out: the text said it all."""
        oid, part = event.objective_id, f"{key}:picture"
        if self.refs.get(oid, part) is not None:
            return
        if (snapshot := picture.snapshot_for(event, self.swarm.view)) is None:
            return
        if (drawing := await picture.render(snapshot)) is None:
            if isinstance(event, PictureRequested):
                await self._post_once(thread, oid, part, render.notice(Notice(
                    oid, f"The plan could not be drawn. {picture.alt_text(snapshot)}")))
            return
        try:
            channel, message_id = await self._send(thread, DiscordMessage(), image=drawing)
        except Exception as exc:
            if permanent(exc) is None:
                raise  # the dispatcher tries again; the text above is not posted twice
            log.warning("discord.picture_refused objective=%s error=%s", oid,
                        type(exc).__name__)
            return
        self.refs.save(oid, part, channel, message_id)

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

    async def _post_once(self, thread: ThreadRef, objective_id: int, key: str,
                         msg: DiscordMessage) -> None:
        if self.refs.get(objective_id, key) is not None:
            return
        channel, message_id = await self._send(thread, msg)
        self.refs.save(objective_id, key, channel, message_id)

    async def _post_progress(self, view: ObjectiveView, thread: ThreadRef) -> tuple[str, str]:
        return await self._send(thread, render.progress(view))

    async def _edit_progress(self, view: ObjectiveView, thread: ThreadRef, channel: str,
                             message_id: str) -> None:
        try:
            await self._edit(channel, message_id, render.progress(view))
        except discord.RateLimited as exc:  # longer than the client sleeps: fold it in
            log.info("discord.progress_rate_limited retry_after_s=%.1f", exc.retry_after)
            raise EditLater(exc.retry_after) from exc

    async def _decided(self, event: ApprovalDecided, thread: ThreadRef, key: str) -> None:
        """The approval message is edited in place: who decided, and no buttons left."""
        view = self.swarm.view(event.objective_id) if event.kind == "plan" else None
        msg = render.decided(event, view)
        ref = self.refs.get(event.objective_id, approval_key(event.approval_id))
        if ref is None:  # its request was never shown
            await self._post_once(thread, event.objective_id, f"{key}:0", msg)
            return
        await self._edit(ref.channel_id, ref.message_id, msg)

    async def close(self) -> None:
        await self.progress.close()  # no edit retried here: what is owed waits in the outbox
