"""The Slack adapter: shows swarm events in their Slack thread (the dispatcher calls it)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from slack_sdk.web.async_client import AsyncWebClient

from bot import picture
from bot.progress import ProgressMessages
from bot.refs import MessageRefs, approval_key
from bot.slack import render
from bot.slack.errors import permanent
from bot.slack.features import AGENT_BLOCKS, WorkspaceFeatures
from bot.slack.install import BotTokens
from bot.slack.sessions import AgentSessions
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
ROOT = "thread"  # the message ref of a scheduled objective's first message: its thread


class SlackAdapter:
    platform = "slack"
    coalesce_progress = True  # the progress message is re-rendered from the view each time

    def __init__(self, swarm: Swarm, client: AsyncWebClient, tokens: BotTokens, *,
                 progress_interval_s: float = 1.0) -> None:
        self.swarm, self.client, self.tokens = swarm, client, tokens
        self.features = WorkspaceFeatures()
        self.sessions = AgentSessions(client, tokens, self.features)
        self.refs = MessageRefs(swarm.db, self.platform)
        self.progress = ProgressMessages(self.refs, swarm.view, self._post_progress,
                                         self._edit_progress, interval_s=progress_interval_s)

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Raises PermanentDeliveryError for what Slack will never accept (bot/slack/errors)."""
        try:
            await self._deliver(event, thread, key)
        except Exception as exc:
            if (gone := permanent(exc)) is not None:
                raise gone from exc
            raise
        # the thread's session is its tree's: a team's end does not close it
        if (view := self.swarm.view(self.swarm.root_of(event.objective_id))) is not None:
            await self.sessions.show(view)  # after the messages: it never holds them back

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
                await self._results(event, thread)
                await self.progress.show(shown, thread, create=False)
            case Notice():
                await self._post_once(thread, oid, f"{key}:0", render.notice(event))
            case PictureRequested():
                pass  # the picture, below, is all it shows
            case ApprovalReminder():
                await self._post_once(thread, oid, f"{key}:0", render.reminder(event))
            case ApprovalExpired():
                await self._replace_approval(event.objective_id, event.approval_id, thread, key,
                                             render.expired(event))
            case DriftDetected():
                await self._post_once(thread, oid, approval_key(event.approval_id),
                                      render.drift(event))
                await self.progress.show(oid, thread, create=False)
            case Digest():
                await self._post_once(thread, oid, f"{key}:0", render.digest(event))
            case _ if event.progress:  # step started, revised, finished, failed, retried
                await self.progress.show(shown, thread, create=True)
            case _:  # no message of its own yet: the checklist still shows its effect
                log.info("slack.event_without_message kind=%s objective=%s", event.event_type,
                         oid)
                await self.progress.show(shown, thread, create=False)
        await self._picture(event, thread, key)

    async def _picture(self, event: Event, thread: ThreadRef, key: str) -> None:
        """The plan's picture, uploaded into the thread after the event's text. One that cannot
        be drawn, or that Slack refuses for good, is logged and left out: the text said it all
        (and for one asked for, the steps and their states are posted as text instead)."""
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
            resp = await self.client.files_upload_v2(
                token=await self.tokens(thread.team_id), channel=thread.channel_id,
                thread_ts=thread.thread_id or self._root(oid), file=drawing.png,
                filename=drawing.filename,
                title=snapshot.heading, alt_txt=drawing.alt_text)
        except Exception as exc:
            if permanent(exc) is None:
                raise  # the dispatcher tries again; the text above is not posted twice
            log.warning("slack.picture_refused objective=%s error=%s", oid,
                        getattr(exc, "response", {}).get("error", type(exc).__name__))
            return
        file_id = str((resp.get("files") or [{}])[0].get("id", "file"))
        self.refs.save(oid, part, thread.channel_id, file_id)

    async def _post_progress(self, view: ObjectiveView, thread: ThreadRef) -> tuple[str, str]:
        return await self._progress(view, thread,
                                    lambda msg: self._post(thread, msg, view.id))

    async def _edit_progress(self, view: ObjectiveView, thread: ThreadRef, channel: str,
                             ts: str) -> None:
        async def edit(msg: render.SlackMessage) -> None:
            await self.client.chat_update(token=await self.tokens(thread.team_id),
                                          channel=channel, ts=ts, text=msg.text,
                                          blocks=msg.blocks)
        await self._progress(view, thread, edit)

    async def _progress(self, view: ObjectiveView, thread: ThreadRef,
                        send: Callable[[render.SlackMessage], Awaitable[T]]) -> T:
        """The progress message as a plan of task cards, or as sections where Slack refuses
        those blocks (learnt once per workspace)."""
        if self.features.offered(thread.team_id, AGENT_BLOCKS):
            try:
                return await send(render.progress_plan(view))
            except Exception as exc:
                if not self.features.lacks(thread.team_id, AGENT_BLOCKS, exc):
                    raise
        return await send(render.progress(view))

    async def _post(self, thread: ThreadRef, msg: render.SlackMessage,
                    objective_id: int = 0) -> tuple[str, str]:
        root = thread.thread_id or self._root(objective_id)
        resp = await self.client.chat_postMessage(
            token=await self.tokens(thread.team_id), channel=thread.channel_id,
            thread_ts=root or None, text=msg.text, blocks=msg.blocks)
        channel, ts = str(resp["channel"]), str(resp["ts"])
        if not root and objective_id:  # started by a schedule: its first message is its thread
            self.refs.save(objective_id, ROOT, channel, ts)
        return channel, ts

    def _root(self, objective_id: int) -> str | None:
        """The thread of an objective that no message started (a recurring goal's)."""
        ref = self.refs.get(objective_id, ROOT) if objective_id else None
        return ref.message_id if ref is not None else None

    async def _post_once(self, thread: ThreadRef, objective_id: int, key: str,
                         msg: render.SlackMessage) -> None:
        if self.refs.get(objective_id, key) is not None:
            return
        channel, ts = await self._post(thread, msg, objective_id)
        self.refs.save(objective_id, key, channel, ts)

    async def _replace_approval(self, objective_id: int, approval_id: int, thread: ThreadRef,
                                key: str, msg: render.SlackMessage) -> None:
        """Edit the approval's message (its buttons go); post it if it was never shown."""
        ref = self.refs.get(objective_id, approval_key(approval_id))
        if ref is None:
            await self._post_once(thread, objective_id, f"{key}:0", msg)
            return
        await self.client.chat_update(token=await self.tokens(thread.team_id),
                                      channel=ref.channel_id, ts=ref.message_id, text=msg.text,
                                      blocks=msg.blocks)

    async def _decided(self, event: ApprovalDecided, thread: ThreadRef, key: str) -> None:
        view = self.swarm.view(event.objective_id) if event.kind == "plan" else None
        msg = render.decided(event, view)
        # its request never shown (e.g. posted by an older version): posted instead
        await self._replace_approval(event.objective_id, event.approval_id, thread, key, msg)

    async def _results(self, event: ObjectiveFinished, thread: ThreadRef) -> None:
        oid = event.objective_id
        if render.results_size(event) > render.FILE_CHARS:
            if self.refs.get(oid, "results:file") is not None:
                return
            resp = await self.client.files_upload_v2(
                token=await self.tokens(thread.team_id), channel=thread.channel_id,
                thread_ts=thread.thread_id or self._root(oid),
                content=render.results_document(event),
                filename=f"objective-{oid}-results.md", title=f"Objective #{oid} results",
                initial_comment=render.summary(event))
            file_id = str((resp.get("files") or [{}])[0].get("id", "file"))
            self.refs.save(oid, "results:file", thread.channel_id, file_id)
            return
        for i, msg in enumerate(render.results(event)):
            await self._post_once(thread, oid, f"results:{i}", msg)

    async def close(self) -> None:
        await self.progress.close()  # no edit retried here: what is owed waits in the outbox
