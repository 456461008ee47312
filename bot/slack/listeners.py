"""What Slack sends the bot (mentions, thread replies, reactions, clicks, /swarm), to the swarm."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands
from bot.refs import MessageRefs, approval_id_of
from bot.slack.admins import WorkspaceAdmins
from bot.slack.render import (
    APPROVE_REACTIONS,
    REASON_BLOCK,
    REASON_INPUT,
    REJECT_REACTIONS,
    REJECT_VIEW,
    parse_action_id,
    reject_modal,
)
from bot.slack.text import escape, from_slack
from swarm.services.objectives import Swarm, UserError
from swarm.store.models import MessageRef, ThreadRef

log = logging.getLogger(__name__)
T = TypeVar("T")
PLATFORM = "slack"
COMMAND_ACK_BUDGET_S = 2.0  # Slack waits 3 s for a slash command's answer
ANSWERED_REACTION = "ok_hand"
REPLY_SUBTYPES = frozenset({None, "thread_broadcast"})  # a human's reply; edits etc. are not
REF_LOOKUPS, REF_LOOKUP_PAUSE_S = 8, 0.25


class RecentEvents:
    """Event ids seen lately, so a redelivery within this process is answered and dropped.
    (A mention, and a reply that answered a question, are also deduplicated durably by the
    swarm, across restarts; a decision is idempotent.)"""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


def text_of(payload: Any, *keys: str) -> str | None:
    """The non-empty string at payload[k1][k2]..., or None: Slack's payloads are read only
    through this, so a field missing or of another type is a payload ignored, not a crash."""
    for key in keys:
        payload = payload.get(key) if isinstance(payload, dict) else None
    return payload if isinstance(payload, str) and payload else None


class OnSwarm(Protocol):
    """Runs a swarm call on the swarm's own loop (listeners run on the ingress loop)."""

    def __call__(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]: ...


def register(app: AsyncApp, swarm: Swarm, refs: MessageRefs, on_swarm: OnSwarm) -> None:
    """Reads (views, message refs) run here; every swarm write hops to the swarm's loop."""
    recent = RecentEvents()
    admins = WorkspaceAdmins()

    async def drop_redelivered(body: dict[str, Any],
                               next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        event_id = text_of(body, "event_id")
        if body.get("type") == "event_callback" and event_id and not recent.first_time(event_id):
            log.info("slack.event_redelivered event_id=%s", event_id)
            return BoltResponse(status=200, body="")
        await next()
        return None

    app.middleware(drop_redelivered)

    async def decide(client: AsyncWebClient, context: AsyncBoltContext, approval_id: int,
                     user: str, approve: bool, channel: str, thread_ts: str | None,
                     reason: str | None = None) -> None:
        who = await admins.principal(client, context.team_id, user, channel) \
            if context.team_id else user  # the policy decides; Slack says who is an admin
        result = await on_swarm(swarm.decide(approval_id, who, approve, reason))
        if result.ok:
            log.info("slack.approval_decided approval=%s user=%s approve=%s", approval_id, user,
                     approve)
            return
        log.info("slack.approval_refused approval=%s user=%s", approval_id, user)
        await client.chat_postEphemeral(channel=channel, user=user, text=escape(result.message),
                                        thread_ts=thread_ts)

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext,
                         client: AsyncWebClient) -> None:
        user, channel, ts = text_of(event, "user"), text_of(event, "channel"), text_of(event, "ts")
        team, event_id = text_of(body, "team_id"), text_of(body, "event_id")
        if not (user and channel and ts and team and event_id):
            return
        root = text_of(event, "thread_ts")
        thread = ThreadRef(PLATFORM, team, channel, root or ts)
        goal = from_slack(text_of(event, "text") or "", drop_user=context.bot_user_id)
        key = f"slack:{event_id}"
        if root is not None and goal != "" and await on_swarm(swarm.reply(thread, user, goal, key)):
            await client.reactions_add(channel=channel, timestamp=ts, name=ANSWERED_REACTION)
            return  # a mention in a thread that waits for an answer is the answer
        try:
            started = await on_swarm(swarm.start_objective(
                goal, thread, requester=user, event_key=key))
        except UserError as exc:
            await client.chat_postMessage(channel=channel, thread_ts=thread.thread_id,
                                          text=escape(str(exc)))
            return
        log.info("slack.mention objective=%s duplicate=%s team=%s channel=%s",
                 started.objective_id, started.duplicate, thread.team_id, channel)
        if not started.duplicate:
            await client.reactions_add(channel=channel, timestamp=ts, name="eyes")

    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext,
                         client: AsyncWebClient) -> None:
        user, root, text = text_of(event, "user"), text_of(event, "thread_ts"), \
            text_of(event, "text") or ""
        channel, ts = text_of(event, "channel"), text_of(event, "ts")
        team, event_id = text_of(body, "team_id"), text_of(body, "event_id")
        if (event.get("subtype") not in REPLY_SUBTYPES or event.get("bot_id") or not user
                or user == context.bot_user_id or not root or root == ts
                or not (channel and ts and team and event_id)):
            return
        if context.bot_user_id and f"<@{context.bot_user_id}" in text:
            return  # a mention: on_mention has it
        thread = ThreadRef(PLATFORM, team, channel, root)
        if await on_swarm(swarm.reply(thread, user, from_slack(text), f"slack:{event_id}")):
            log.info("slack.question_answered team=%s channel=%s", thread.team_id,
                     thread.channel_id)
            await client.reactions_add(channel=channel, timestamp=ts, name=ANSWERED_REACTION)

    async def approval_message(channel: str, ts: str) -> MessageRef | None:
        # Slack shows a message a moment before the bot has stored its ts (the post's answer
        # comes back first): a reaction that quick must not be lost, so look again a while.
        for _ in range(REF_LOOKUPS):
            if (ref := refs.at(channel, ts)) is not None:
                return ref
            await asyncio.sleep(REF_LOOKUP_PAUSE_S)
        return None

    @app.event("reaction_added")
    async def on_reaction(event: dict[str, Any], context: AsyncBoltContext,
                          client: AsyncWebClient) -> None:
        name, user = text_of(event, "reaction"), text_of(event, "user")
        channel, ts = text_of(event, "item", "channel"), text_of(event, "item", "ts")
        approve = True if name in APPROVE_REACTIONS else False if name in REJECT_REACTIONS \
            else None
        if (approve is None or text_of(event, "item", "type") != "message" or not user
                or not (channel and ts)
                or event.get("item_user") not in (None, context.bot_user_id)):
            return  # only a reaction on one of the bot's messages can be a decision
        ref = await approval_message(channel, ts)
        approval_id = approval_id_of(ref.key) if ref is not None else None
        if ref is None or approval_id is None:
            return
        view = swarm.view(ref.objective_id)
        await decide(client, context, approval_id, user, approve, channel,
                     view.thread.thread_id if view else None)

    @app.action(re.compile(r"^(approve|reject):\d+$"))
    async def on_click(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       context: AsyncBoltContext, client: AsyncWebClient) -> None:
        await ack()
        parsed = parse_action_id(text_of(action, "action_id") or "")
        user, channel = text_of(body, "user", "id"), text_of(body, "channel", "id")
        if parsed is None or not (user and channel):
            return
        approve, approval_id = parsed
        channel_thread = text_of(body, "message", "thread_ts") or text_of(body, "message", "ts")
        trigger = text_of(body, "trigger_id")
        if not approve and trigger and swarm.pending_plan(approval_id):
            await client.views_open(trigger_id=trigger,
                                    view=reject_modal(approval_id, channel, channel_thread))
            return  # the decision comes with the modal's submission, and its reason
        await decide(client, context, approval_id, user, approve, channel, channel_thread)

    @app.view(REJECT_VIEW)
    async def on_reject_reason(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                               context: AsyncBoltContext, client: AsyncWebClient) -> None:
        await ack()
        user = text_of(body, "user", "id")
        try:
            meta = json.loads(text_of(view, "private_metadata") or "{}")
            approval_id, channel = int(meta["approval"]), str(meta["channel"])
        except (ValueError, KeyError, TypeError):
            log.warning("slack.reject_view_without_approval")
            return
        if user is None:
            return
        reason = text_of(view, "state", "values", REASON_BLOCK, REASON_INPUT, "value")
        await decide(client, context, approval_id, user, False, channel, meta.get("thread_ts"),
                     reason)

    @app.event("agent_session_stopped")
    async def on_stop(body: dict[str, Any], event: dict[str, Any],
                      client: AsyncWebClient) -> None:
        """Slack's native Stop button: a cancel by whoever clicked it, through the same check
        as `/swarm cancel` (Swarm.cancel checks the actor)."""
        user, channel, root = text_of(event, "user"), text_of(event, "channel"), \
            text_of(event, "thread_ts")
        team = text_of(body, "team_id")
        if not (user and channel and root and team):
            return
        running = swarm.objectives(thread=ThreadRef(PLATFORM, team, channel, root),
                                   active_only=True, limit=1)
        if not running:
            return  # it ended meanwhile: its session is (being) closed
        who = await admins.principal(client, team, user, channel)  # an admin may stop it too
        result = await on_swarm(swarm.cancel(running[0].id, who))
        log.info("slack.session_stopped objective=%s user=%s cancelled=%s", running[0].id, user,
                 result.ok)
        if not result.ok:
            await client.chat_postEphemeral(channel=channel, user=user, thread_ts=root,
                                            text=escape(result.message))

    async def run_command(client: AsyncWebClient, user: str, team: str,
                          command: dict[str, Any]) -> commands.CommandReply:
        who = await admins.principal(client, team, user, text_of(command, "channel_id"))
        return await on_swarm(commands.handle(swarm, who, team, text_of(command, "text") or ""))

    @app.command("/swarm")
    async def on_command(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any],
                         client: AsyncWebClient) -> None:
        user, team = text_of(command, "user_id"), text_of(command, "team_id")
        if not (user and team):
            await ack(text="This command came without its user or team.",
                      response_type="ephemeral")
            return
        answer = asyncio.ensure_future(run_command(client, user, team, command))
        try:  # answer in the ack when the swarm is quick, as it nearly always is
            reply = await asyncio.wait_for(asyncio.shield(answer), COMMAND_ACK_BUDGET_S)
        except TimeoutError:
            await ack(text="Working on it…", response_type="ephemeral")
            reply = await answer
            await respond(text=escape(reply.text), replace_original=True,
                          response_type="ephemeral" if reply.ephemeral else "in_channel")
            return
        await ack(text=escape(reply.text),
                  response_type="ephemeral" if reply.ephemeral else "in_channel")
