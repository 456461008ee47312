"""The Slack adapter: shows swarm events in their Slack thread (the dispatcher calls it).

bot/routing.py decides what each event posts; this is how Slack posts it (a Surface): Block Kit
messages, chat.update, files_upload_v2, and the agent session beside the thread."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from slack_sdk.web.async_client import AsyncWebClient

from bot import picture
from bot.adapter import PermanentDeliveryError
from bot.routing import EventRouter
from bot.slack import render
from bot.slack.errors import permanent
from bot.slack.features import AGENT_BLOCKS, WorkspaceFeatures
from bot.slack.install import BotTokens
from bot.slack.sessions import AgentSessions
from swarm.events import Event, ObjectiveFinished
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef
from swarm.store.views import ObjectiveView

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
        self.router = EventRouter(swarm, self.platform, render, self,
                                  progress_interval_s=progress_interval_s)
        self.refs, self.progress = self.router.refs, self.router.progress

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Raises PermanentDeliveryError for what Slack will never accept (bot/slack/errors)."""
        await self.router.deliver(event, thread, key)
        # the thread's session is its tree's: a team's end does not close it
        if (view := self.swarm.view(self.swarm.root_of(event.objective_id))) is not None:
            await self.sessions.show(view)  # after the messages: it never holds them back

    async def post_results(self, event: ObjectiveFinished, thread: ThreadRef) -> None:
        """The results as messages, or as one Markdown file when they are very long."""
        oid = event.objective_id
        if render.results_size(event) <= render.FILE_CHARS:
            for i, msg in enumerate(render.results(event)):
                await self.router.post_once(thread, oid, f"results:{i}", msg)
            return
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

    async def upload_picture(self, thread: ThreadRef, objective_id: int,
                             drawing: picture.Drawing, title: str) -> tuple[str, str]:
        resp = await self.client.files_upload_v2(
            token=await self.tokens(thread.team_id), channel=thread.channel_id,
            thread_ts=thread.thread_id or self._root(objective_id), file=drawing.png,
            filename=drawing.filename, title=title, alt_txt=drawing.alt_text)
        return thread.channel_id, str((resp.get("files") or [{}])[0].get("id", "file"))

    def permanent(self, exc: Exception) -> PermanentDeliveryError | None:
        return permanent(exc)

    async def post_progress(self, view: ObjectiveView, thread: ThreadRef) -> tuple[str, str]:
        return await self._progress(view, thread,
                                    lambda msg: self.post(thread, msg, view.id))

    async def edit_progress(self, view: ObjectiveView, thread: ThreadRef, channel: str,
                             ts: str) -> None:
        await self._progress(view, thread, lambda msg: self.edit(thread, channel, ts, msg))

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

    async def post(self, thread: ThreadRef, msg: render.SlackMessage,
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

    async def edit(self, thread: ThreadRef, channel_id: str, message_id: str,
                   msg: render.SlackMessage) -> None:
        await self.client.chat_update(token=await self.tokens(thread.team_id),
                                      channel=channel_id, ts=message_id, text=msg.text,
                                      blocks=msg.blocks)

    async def close(self) -> None:
        await self.progress.close()  # no edit retried here: what is owed waits in the outbox
