"""The discord.py client of the edge: what Discord sends (mentions, replies, reactions, button
clicks, `/swarm`), handed to the swarm. It runs on the ingress loop; swarm calls hop over."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol, TypeVar

import discord
from discord import app_commands

from bot import commands
from bot.discord.buttons import ApprovalButton
from bot.discord.render import APPROVE_EMOJI, REJECT_EMOJI
from bot.discord.text import MESSAGE_CHARS, clip, without_mention
from bot.refs import MessageRefs, approval_id_of
from swarm.contract import ThreadRef, UserError
from swarm.redact import redact
from swarm.services.objectives import Swarm

log = logging.getLogger(__name__)
T = TypeVar("T")
PLATFORM = "discord"
ANSWERED_EMOJI, SEEN_EMOJI = "👌", "👀"
THREAD_EXISTS = 160004  # Discord's code: this message already has a thread
REF_LOOKUPS, REF_LOOKUP_PAUSE_S = 8, 0.25
# A 429 asking for longer than this raises RateLimited instead of sleeping (30 s is the least
# discord.py allows): the caller decides, e.g. a progress edit is folded into the next one.
MAX_RATELIMIT_WAIT_S = 30.0
COMMAND_ANSWER_BUDGET_S = 2.0  # Discord waits 3 s for an interaction's first answer


class OnSwarm(Protocol):
    """Runs a swarm call on the swarm's own loop (the client runs on the ingress loop)."""

    def __call__(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]: ...


def intents() -> discord.Intents:
    """Guilds, guild messages and reactions; no message content: mentions carry theirs."""
    wanted = discord.Intents.none()
    wanted.guilds = wanted.guild_messages = wanted.guild_reactions = True
    return wanted


def thread_ref(guild_id: int, channel_id: int) -> ThreadRef:
    """A Discord thread is a channel: the objective's messages go to its id."""
    return ThreadRef(PLATFORM, str(guild_id), str(channel_id), str(channel_id))


class SwarmClient(discord.Client):
    def __init__(self, swarm: Swarm, refs: MessageRefs, on_swarm: OnSwarm) -> None:
        super().__init__(intents=intents(), max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
                         allowed_mentions=discord.AllowedMentions.none())
        self.swarm, self.refs, self.on_swarm = swarm, refs, on_swarm
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(swarm_command())

    async def setup_hook(self) -> None:
        # Buttons by their custom_id's template: clicks on messages of any process work.
        self.add_dynamic_items(ApprovalButton)

    # -- messages ----------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or self.user is None:
            return
        mentioned = any(u.id == self.user.id for u in message.mentions)
        in_thread = isinstance(message.channel, discord.Thread) or \
            message.guild.get_channel(message.channel.id) is None
        text = without_mention(message.content, self.user.id)
        key = f"discord:{message.id}"
        if in_thread:
            thread = thread_ref(message.guild.id, message.channel.id)
            answered = bool(text) and await self.on_swarm(
                self.swarm.reply(thread, str(message.author.id), text, key))
            if answered:
                log.info("discord.question_answered guild=%s thread=%s", thread.team_id,
                         thread.thread_id)
                await message.add_reaction(ANSWERED_EMOJI)
                return
            if mentioned:
                await self._start(message, thread, text, key)
            return
        if mentioned:
            await self._start(message, None, text, key)

    async def _start(self, message: discord.Message, thread: ThreadRef | None, goal: str,
                     key: str) -> None:
        assert message.guild is not None
        if not goal:
            await message.reply("Tell me a goal, e.g. “@threadswarm launch our SaaS in "
                                "Japan”.", mention_author=False)
            return
        if thread is None:  # a mention in a channel: its objective gets a thread of its own
            try:
                await message.create_thread(name=clip(redact(goal), 100))  # names show
            except discord.HTTPException as exc:
                if exc.code != THREAD_EXISTS:  # exists: a redelivery, or another process
                    raise
            thread = thread_ref(message.guild.id, message.id)
        try:
            started = await self.on_swarm(self.swarm.start_objective(
                goal, thread, requester=str(message.author.id), event_key=key))
        except UserError as exc:
            await self.get_partial_messageable(int(thread.channel_id)).send(
                clip(str(exc), MESSAGE_CHARS))
            return
        log.info("discord.mention objective=%s duplicate=%s guild=%s thread=%s",
                 started.objective_id, started.duplicate, thread.team_id, thread.thread_id)
        if not started.duplicate:
            await message.add_reaction(SEEN_EMOJI)

    # -- decisions ---------------------------------------------------------------------------
    async def _approval_at(self, channel_id: int, message_id: int) -> int | None:
        # A reaction can come a moment before the bot has stored the message's id (the post's
        # answer comes back first): look again a while rather than lose it.
        for _ in range(REF_LOOKUPS):
            if (ref := self.refs.at(str(channel_id), str(message_id))) is not None:
                return approval_id_of(ref.key)
            await asyncio.sleep(REF_LOOKUP_PAUSE_S)
        return None

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Raw: a reaction on a message this process never cached counts too."""
        name = payload.emoji.name
        approve = True if name in APPROVE_EMOJI else False if name in REJECT_EMOJI else None
        if approve is None or self.user is None or payload.user_id == self.user.id or \
                payload.guild_id is None:
            return
        if payload.message_author_id not in (None, self.user.id):
            return  # only a reaction on one of the bot's messages can be a decision
        approval_id = await self._approval_at(payload.channel_id, payload.message_id)
        if approval_id is None:
            return
        result = await self.on_swarm(self.swarm.decide(approval_id, str(payload.user_id),
                                                       approve))
        log.info("discord.reaction_decision approval=%s user=%s ok=%s", approval_id,
                 payload.user_id, result.ok)
        if not result.ok:  # no ephemeral messages outside interactions: a short reply
            channel = self.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
            await channel.send(clip(f"<@{payload.user_id}> {result.message}", MESSAGE_CHARS),
                               reference=discord.MessageReference(
                                   message_id=payload.message_id, channel_id=payload.channel_id,
                                   fail_if_not_exists=False))

    async def on_approval_click(self, interaction: discord.Interaction[Any], approval_id: int,
                                approve: bool) -> None:
        # Deferred at once (Discord waits 3 s); the answer follows, seen by the clicker only.
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await self.on_swarm(self.swarm.decide(approval_id, str(interaction.user.id),
                                                       approve))
        log.info("discord.click_decision approval=%s user=%s ok=%s", approval_id,
                 interaction.user.id, result.ok)
        await interaction.followup.send(clip(result.message, MESSAGE_CHARS), ephemeral=True)


def _objectives_channel(interaction: discord.Interaction[Any]) -> str | None:
    """The channel whose objectives `list` shows: an objective's thread is its channel here
    (thread_ref), so in a thread that thread; in a text channel, whose objectives each live in
    a thread of their own, none (the guild's latest)."""
    return str(interaction.channel_id) if isinstance(interaction.channel, discord.Thread) \
        else None


def swarm_command() -> app_commands.Command[Any, ..., None]:
    """`/swarm command:<text>`: the shared handler of bot/commands.py, as Slack's `/swarm`."""

    @app_commands.command(name="swarm", description="threadswarm: status, list, cancel…")
    @app_commands.describe(command="what to do, e.g. `status 12`; empty for help")
    @app_commands.guild_only()
    async def run(interaction: discord.Interaction[SwarmClient], command: str = "") -> None:
        client = interaction.client
        answer = asyncio.ensure_future(client.on_swarm(commands.handle(
            client.swarm, str(interaction.user.id), str(interaction.guild_id), command,
            platform=PLATFORM, platform_admin=interaction.permissions.manage_guild,
            channel_id=_objectives_channel(interaction))))
        try:  # answered at once when the swarm is quick, as it nearly always is
            reply = await asyncio.wait_for(asyncio.shield(answer), COMMAND_ANSWER_BUDGET_S)
        except TimeoutError:
            await interaction.response.defer(ephemeral=True, thinking=True)
            reply = await answer
            await interaction.followup.send(clip(reply.text, MESSAGE_CHARS), ephemeral=True)
            return
        await interaction.response.send_message(clip(reply.text, MESSAGE_CHARS),
                                                ephemeral=reply.ephemeral)

    return run
