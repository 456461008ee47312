"""What each neutral event posts in its thread, and when: one router for every chat platform.

Slack and Discord show the same events the same way (the event's text once, an approval edited
in place when decided, the objective's progress message brought up to date, the plan's picture
after the text); only the rendering (Block Kit, embeds) and the platform calls differ. So an
adapter gives the router its renderer and a Surface (how it posts, edits and uploads), and keeps
the rest of its platform to itself (bot/slack/adapter.py, bot/discord/adapter.py).
"""
from __future__ import annotations

import logging
from typing import Generic, Protocol, TypeVar

from bot import picture
from bot.adapter import PermanentDeliveryError
from bot.progress import ProgressMessages
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
M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)
M_contra = TypeVar("M_contra", contravariant=True)
Scheduled = ApprovalReminder | ApprovalExpired | DriftDetected | Digest


class Renderer(Protocol[M_co]):
    """A platform's messages for the events (its render module)."""

    def accepted(self, ev: ObjectiveAccepted) -> M_co: ...
    def plan(self, ev: PlanProposed) -> M_co: ...
    def approval(self, ev: ApprovalRequested) -> M_co: ...
    def decided(self, ev: ApprovalDecided, view: ObjectiveView | None) -> M_co: ...
    def question(self, ev: QuestionAsked) -> M_co: ...
    def state_changed(self, ev: ObjectiveStateChanged) -> M_co: ...
    def notice(self, ev: Notice) -> M_co: ...
    def scheduled(self, ev: Scheduled) -> M_co: ...


class Surface(Protocol[M_contra]):
    """How a platform posts into a thread. Each call raises what the platform answered."""

    async def post_progress(self, view: ObjectiveView, thread: ThreadRef) -> tuple[str, str]:
        """Post the objective's progress message (bot/progress.py's Post)."""
        ...

    async def edit_progress(self, view: ObjectiveView, thread: ThreadRef, channel_id: str,
                            message_id: str) -> None: ...

    async def post(self, thread: ThreadRef, msg: M_contra, objective_id: int
                   ) -> tuple[str, str]:
        """Post `msg` in the thread; returns (channel id, message id)."""
        ...

    async def edit(self, thread: ThreadRef, channel_id: str, message_id: str,
                   msg: M_contra) -> None: ...

    async def post_results(self, event: ObjectiveFinished, thread: ThreadRef) -> None:
        """The results, each part once (`EventRouter.post_once`)."""
        ...

    async def upload_picture(self, thread: ThreadRef, objective_id: int,
                             drawing: picture.Drawing, title: str) -> tuple[str, str]:
        """Post the PNG with its alt text; returns (channel id, the message's or file's id)."""
        ...

    def permanent(self, exc: Exception) -> PermanentDeliveryError | None:
        """What `exc` amounts to if retrying cannot help, else None."""
        ...


class EventRouter(Generic[M]):
    """Every message is posted once: each has a message ref (by objective, or by delivery `key`
    and part), and a retry of a partly delivered event skips what it finds."""

    def __init__(self, swarm: Swarm, platform: str, render: Renderer[M], surface: Surface[M],
                 *, progress_interval_s: float = 1.0) -> None:
        self.swarm, self.render, self.surface = swarm, render, surface
        self.refs = MessageRefs(swarm.db, platform)
        self.progress = ProgressMessages(self.refs, swarm.view, surface.post_progress,
                                         surface.edit_progress, interval_s=progress_interval_s)

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Raises PermanentDeliveryError for what the platform will never accept."""
        try:
            await self._route(event, thread, key)
        except Exception as exc:
            if (gone := self.surface.permanent(exc)) is not None:
                raise gone from exc
            raise

    async def _route(self, event: Event, thread: ThreadRef, key: str) -> None:
        oid, render, show = event.objective_id, self.render, self.progress.show
        shown = self.swarm.root_of(oid)  # a team's progress shows in its tree's message
        match event:
            case ObjectiveAccepted():
                await self.post_once(thread, oid, "accepted", render.accepted(event))
            case PlanProposed():
                await self.post_once(thread, oid, approval_key(event.approval_id),
                                     render.plan(event))
            case ApprovalRequested():
                await self.post_once(thread, oid, approval_key(event.approval_id),
                                     render.approval(event))
                await show(shown, thread, create=False)
            case ApprovalDecided():  # the request's message says who decided; its buttons go
                view = self.swarm.view(oid) if event.kind == "plan" else None
                await self._replace_approval(thread, oid, event.approval_id, key,
                                             render.decided(event, view))
                await show(shown, thread, create=event.kind == "plan" and event.approved)
            case QuestionAsked():
                await self.post_once(thread, oid, f"question:{event.question_id}",
                                     render.question(event))
                await show(shown, thread, create=True)
            case ObjectiveStateChanged():
                await self.post_once(thread, oid, f"{key}:0", render.state_changed(event))
                await show(shown, thread, create=False)
            case ObjectiveFinished():  # results first: a refused progress edit loses none
                await self.surface.post_results(event, thread)
                await show(shown, thread, create=False)
            case Notice():
                await self.post_once(thread, oid, f"{key}:0", render.notice(event))
            case PictureRequested():
                pass  # the picture, below, is all it shows
            case ApprovalReminder() | Digest():
                await self.post_once(thread, oid, f"{key}:0", render.scheduled(event))
            case ApprovalExpired():  # the request's message loses its buttons, says it expired
                await self._replace_approval(thread, oid, event.approval_id, key,
                                             render.scheduled(event))
                await show(oid, thread, create=False)
            case DriftDetected():
                await self.post_once(thread, oid, approval_key(event.approval_id),
                                     render.scheduled(event))
                await show(oid, thread, create=False)
            case _ if event.progress:  # step started, revised, finished, failed, retried
                await show(shown, thread, create=True)
            case _:  # no message of its own yet: the checklist still shows its effect
                log.info("%s.event_without_message kind=%s objective=%s", self.refs.platform,
                         event.event_type, oid)
                await show(shown, thread, create=False)
        await self._picture(event, thread, key)

    async def post_once(self, thread: ThreadRef, objective_id: int, key: str, msg: M) -> None:
        if self.refs.get(objective_id, key) is not None:
            return
        channel, message_id = await self.surface.post(thread, msg, objective_id)
        self.refs.save(objective_id, key, channel, message_id)

    async def _replace_approval(self, thread: ThreadRef, objective_id: int, approval_id: int,
                                key: str, msg: M) -> None:
        """Edit the approval's message; post `msg` if it was never shown (by an older version,
        say)."""
        ref = self.refs.get(objective_id, approval_key(approval_id))
        if ref is None:
            await self.post_once(thread, objective_id, f"{key}:0", msg)
            return
        await self.surface.edit(thread, ref.channel_id, ref.message_id, msg)

    async def _picture(self, event: Event, thread: ThreadRef, key: str) -> None:
        """The plan's picture, after the event's text (as bot/adapter.py's contract says). One
        that cannot be drawn, or that the platform refuses for good, is logged and left out: the
        text said it all (and for one asked for, the steps and states are posted as text)."""
        oid, part = event.objective_id, f"{key}:picture"
        if self.refs.get(oid, part) is not None:
            return
        if (snapshot := picture.snapshot_for(event, self.swarm.view)) is None:
            return
        if (drawing := await picture.render(snapshot)) is None:
            if isinstance(event, PictureRequested):
                await self.post_once(thread, oid, part, self.render.notice(Notice(
                    oid, f"The plan could not be drawn. {picture.alt_text(snapshot)}")))
            return
        try:
            channel, message_id = await self.surface.upload_picture(thread, oid, drawing,
                                                                    snapshot.heading)
        except Exception as exc:
            if (gone := self.surface.permanent(exc)) is None:
                raise  # the dispatcher tries again; the text above is not posted twice
            log.warning("%s.picture_refused objective=%s error=%s", self.refs.platform, oid,
                        gone.reason)
            return
        self.refs.save(oid, part, channel, message_id)
