"""Drivers: each plays the humans on one platform (console prompt, Slack, Discord) against the
bot as `threadswarm` runs it there, and reads back what the humans would see."""
from __future__ import annotations

import asyncio
import itertools
import queue
import re
import time
from dataclasses import dataclass
from io import StringIO
from typing import Any, ClassVar, Protocol

from rich.console import Console

from bot.console.adapter import ConsoleAdapter
from bot.runtime import Runtime
from swarm.events import ObjectiveFinished
from swarm.store.models import ThreadRef
from tests.conftest import make_settings
from tests.fakes.discord_bot import DiscordBot, start_discord_bot
from tests.fakes.discord_server import ALICE as DISCORD_ALICE
from tests.fakes.discord_server import MALLORY as DISCORD_MALLORY
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.local_server import wait_until
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import Bot, start_bot

WAIT_S = 20.0


async def wait_for(check: Any, what: str, timeout: float = WAIT_S) -> Any:
    return await wait_until(check, timeout, what)


@dataclass(frozen=True)
class Shown:
    """A message the humans see (or, on the console, a prompt they answer)."""

    ref: Any  # the platform's handle on it
    text: str


class Platform(Protocol):
    name: str
    alice: str  # the requester
    mallory: str  # neither requester nor approver
    limit: int | None  # characters per message; None: no limit
    edits_in_place: bool  # one progress message, edited (else: a progress line per event)
    reactions: bool  # a reaction (not only a button) decides
    rate_limits: bool

    @property
    def runtime(self) -> Runtime: ...

    async def start(self, *, progress_interval_s: float = 0.2) -> None: ...
    async def restart(self) -> None: ...
    async def close(self) -> None: ...
    async def mention(self, goal: str) -> Any: ...
    async def redeliver(self, mention: Any) -> None: ...
    async def plan(self) -> Shown: ...
    async def step_approval(self) -> Shown: ...
    async def decide(self, shown: Shown, *, user: str, via: str, approve: bool = True
                     ) -> None: ...
    async def refusal(self, user: str) -> str: ...
    async def question(self) -> Shown: ...
    async def reply(self, mention: Any, shown: Shown, text: str) -> None: ...
    async def results(self, objective_id: int) -> str: ...
    def progress(self) -> list[tuple[float, str]]: ...
    def fail_next_posts(self, times: int) -> None: ...
    def post_statuses(self, needle: str) -> list[int]: ...
    async def deliver_results(self, event: ObjectiveFinished) -> list[str]: ...
    def accepted_count(self) -> int: ...
    async def decided(self, shown: Shown) -> str: ...


# -- the chat platforms: a fake platform server and the bot `serve` runs against it ---------
class ChatPlatform:
    """What Slack's and Discord's drivers share: the fake server lives across restarts, the
    bot (a process) is started anew on the same database."""

    def __init__(self, tmp_path: Any, db_url: str, server: Any) -> None:
        self.tmp_path, self.db_url, self.server = tmp_path, db_url, server
        self.bot: Any = None
        self.interval_s = 0.2

    @property
    def runtime(self) -> Runtime:
        assert self.bot is not None
        return self.bot.runtime  # type: ignore[no-any-return]

    async def _boot(self) -> Any:
        raise NotImplementedError

    async def start(self, *, progress_interval_s: float = 0.2) -> None:
        await self.server.start()
        self.interval_s = progress_interval_s
        self.bot = await self._boot()

    async def restart(self) -> None:
        assert self.bot is not None
        await self.bot.close()
        self.bot = await self._boot()

    async def close(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        await self.server.close()


# -- Slack -----------------------------------------------------------------------------------
class SlackPlatform(ChatPlatform):
    name = "slack"
    alice, mallory = "U0ALICE", "U0MALLORY"
    limit = 12_000  # render.MESSAGE_CHARS: the text of one message's blocks
    edits_in_place = reactions = rate_limits = True
    bot: Bot | None

    def __init__(self, tmp_path: Any, db_url: str) -> None:
        self.api = FakeSlackAPI()
        super().__init__(tmp_path, db_url, self.api)

    async def _boot(self) -> Bot:
        return await start_bot(self.tmp_path, self.db_url, self.api,
                               progress_interval_s=self.interval_s)

    async def mention(self, goal: str) -> Any:
        assert self.bot is not None
        event = self.bot.events.mention_event(goal)
        delivery, event_id = await self.bot.events.event(event)
        assert delivery.status == 200 and delivery.elapsed_s < 2.0, "acked at once"
        return event, event_id

    async def redeliver(self, mention: Any) -> None:
        assert self.bot is not None
        event, event_id = mention
        delivery, _ = await self.bot.events.event(event, event_id=event_id, retry_num=1)
        assert delivery.status == 200

    def _with_buttons(self, needle: str) -> list[Any]:
        return [c for c in self.api.posted(needle) if _slack_actions(c)]

    async def plan(self) -> Shown:
        call = (await self.api.wait_for(lambda: self._with_buttons("*Plan v1"),
                                        what="the plan"))[-1]
        return Shown(call, call.text())

    async def step_approval(self) -> Shown:
        call = (await self.api.wait_for(lambda: self._with_buttons("Approval needed"),
                                        what="the step approval"))[-1]
        return Shown(call, call.text())

    async def decide(self, shown: Shown, *, user: str, via: str, approve: bool = True) -> None:
        assert self.bot is not None
        call = shown.ref
        if via == "reaction":
            name = "white_check_mark" if approve else "x"
            delivery, _ = await self.bot.events.event(self.bot.events.reaction_event(
                name, user=user, channel=call.params["channel"], ts=call.answer["ts"]))
        else:
            verb = "approve" if approve else "reject"
            action = next(a for a in _slack_actions(call) if a.startswith(verb + ":"))
            delivery = await self.bot.events.click(
                action, action.split(":")[1], user=user, channel=call.params["channel"],
                message_ts=call.answer["ts"], thread_ts=call.params["thread_ts"])
        assert delivery.status == 200

    async def refusal(self, user: str) -> str:
        told = await self.api.wait_for(lambda: [c for c in self.api.to("chat.postEphemeral")
                                                if c.params["user"] == user],
                                       what="an ephemeral refusal")
        return str(told[-1].params["text"])

    async def question(self) -> Shown:
        # its own words: the progress checklist shows a waiting step with the same emoji
        call = (await self.api.wait_for(lambda: self.api.posted("the next reply answers"),
                                        what="the question"))[-1]
        return Shown(call, call.text())

    async def reply(self, mention: Any, shown: Shown, text: str) -> None:
        assert self.bot is not None
        ev = self.bot.events
        delivery, _ = await ev.event(ev.message_event(text, thread_ts=mention[0]["ts"]))
        assert delivery.status == 200

    async def results(self, objective_id: int) -> str:
        posted = await self.api.wait_for(
            lambda: self.api.posted(f"Objective #{objective_id} finished"), what="the results")
        return "\n".join(c.text() for c in posted)

    def progress(self) -> list[tuple[float, str]]:
        posted = self.api.posted("steps done")
        assert len(posted) <= 1, "one progress message per objective, posted once"
        if not posted:
            return []
        edits = [c for c in self.api.to("chat.update") if c.params["ts"] == posted[0].answer["ts"]]
        return [(c.at, c.text()) for c in [posted[0], *edits]]

    def fail_next_posts(self, times: int) -> None:
        self.api.rate_limit("chat.postMessage", times=times, retry_after=0)

    def post_statuses(self, needle: str) -> list[int]:
        return [c.status for c in self.api.to("chat.postMessage", ok_only=False)
                if needle in c.text()]

    async def deliver_results(self, event: ObjectiveFinished) -> list[str]:
        assert self.bot is not None
        before = len(self.api.to("chat.postMessage"))
        view = self.runtime.swarm.view(event.objective_id)
        assert view is not None
        await self.bot.edge.adapter.deliver(event, view.thread, "outbox:999")
        return ["".join(b["text"]["text"] for b in c.params["blocks"])
                for c in self.api.to("chat.postMessage")[before:]]

    def accepted_count(self) -> int:
        return len(self.api.posted("On it"))

    async def decided(self, shown: Shown) -> str:
        """The approval message as edited once decided (its buttons gone)."""
        ts = shown.ref.answer["ts"]
        edits = await self.api.wait_for(lambda: [c for c in self.api.to("chat.update")
                                                 if c.params["ts"] == ts], what="the edit")
        assert not _slack_actions(edits[-1]), "no buttons left on a decided approval"
        return edits[-1].text()


def _slack_actions(call: Any) -> list[str]:
    return [el["action_id"] for block in call.params.get("blocks", [])
            if block["type"] == "actions" for el in block["elements"]]


# -- Discord ---------------------------------------------------------------------------------
class DiscordPlatform(ChatPlatform):
    name = "discord"
    alice, mallory = DISCORD_ALICE, DISCORD_MALLORY
    limit = 2000
    edits_in_place = reactions = rate_limits = True
    bot: DiscordBot | None

    def __init__(self, tmp_path: Any, db_url: str) -> None:
        self.fake = FakeDiscord()
        super().__init__(tmp_path, db_url, self.fake)

    async def _boot(self) -> DiscordBot:
        return await start_discord_bot(self.tmp_path, self.db_url, self.fake,
                                       progress_interval_s=self.interval_s)

    async def mention(self, goal: str) -> Any:
        return await self.fake.mention(goal)

    async def redeliver(self, mention: Any) -> None:
        await self.fake.dispatch("MESSAGE_CREATE", mention)  # as a RESUME may replay it

    def _with_buttons(self, needle: str) -> list[Any]:
        return [c for c in self.fake.posted(needle) if c.custom_ids]

    async def plan(self) -> Shown:
        call = (await self.fake.wait_for(lambda: self._with_buttons("Plan v1"),
                                         what="the plan"))[-1]
        return Shown(call, call.text())

    async def step_approval(self) -> Shown:
        call = (await self.fake.wait_for(lambda: self._with_buttons("Approval needed"),
                                         what="the step approval"))[-1]
        return Shown(call, call.text())

    async def decide(self, shown: Shown, *, user: str, via: str, approve: bool = True) -> None:
        call = shown.ref
        if via == "reaction":
            await self.fake.react(call.answer["id"], "✅" if approve else "❌", user=user)
            return
        verb = "approve" if approve else "reject"
        custom_id = next(c for c in call.custom_ids if c.startswith(verb + ":"))
        token = await self.fake.click(call.answer["id"], custom_id, user=user,
                                      as_shown=call.answer)
        await self.fake.wait_for(lambda: [c for c in self.fake.answers(token)
                                          if c.path.startswith("/webhooks/")],
                                 what="the click's answer")

    async def refusal(self, user: str) -> str:
        """What `user` was told: privately after a click, in a reply after a reaction."""
        def told() -> list[str]:
            private = [c.body["content"] for c in self.fake.callbacks()
                       if c.path.startswith("/webhooks/") and c.body.get("flags", 0) & 64
                       and "Only" in c.body.get("content", "")]
            public = [c.body["content"] for c in self.fake.posted(f"<@{user}>")
                      if "Only" in c.body.get("content", "")]
            return private + public
        return str((await self.fake.wait_for(told, what="a refusal"))[-1])

    async def question(self) -> Shown:
        call = (await self.fake.wait_for(lambda: self.fake.posted("Question:"),
                                         what="the question"))[-1]
        return Shown(call, call.text())

    async def reply(self, mention: Any, shown: Shown, text: str) -> None:
        await self.fake.message(text, channel=mention["id"])  # in the objective's thread

    async def results(self, objective_id: int) -> str:
        posted = await self.fake.wait_for(
            lambda: self.fake.posted(f"Objective #{objective_id} finished"),
            what="the results")
        first = self.fake.calls.index(posted[0])
        return "\n".join(c.text() for c in self.fake.to("POST /channels/{c}/messages")
                         if self.fake.calls.index(c) >= first)

    def progress(self) -> list[tuple[float, str]]:
        posted = self.fake.posted("steps done")
        assert len(posted) <= 1, "one progress message per objective, posted once"
        if not posted:
            return []
        edits = self.fake.edits_of(posted[0].answer["id"])
        return [(c.at, c.text()) for c in [posted[0], *edits]]

    def fail_next_posts(self, times: int) -> None:
        self.fake.rate_limit("POST /channels/{channel_id}/messages", times=times,
                             retry_after=0.05)

    def post_statuses(self, needle: str) -> list[int]:
        posts = self.fake.to("POST /channels/{channel_id}/messages", ok_only=False)
        return [c.status for c in posts if c.status == 429 or needle in c.text()]

    async def deliver_results(self, event: ObjectiveFinished) -> list[str]:
        assert self.bot is not None
        before = len(self.fake.to("POST /channels/{c}/messages"))
        view = self.runtime.swarm.view(event.objective_id)
        assert view is not None
        await self.bot.edge.adapter.deliver(event, view.thread, "outbox:999")
        return [c.body.get("content") or "" for c in
                self.fake.to("POST /channels/{c}/messages")[before:]]

    def accepted_count(self) -> int:
        return len(self.fake.posted("On it"))

    async def decided(self, shown: Shown) -> str:
        """The approval message as edited once decided (its buttons gone)."""
        edits = await self.fake.wait_for(lambda: self.fake.edits_of(shown.ref.answer["id"]),
                                         what="the edit")
        assert edits[-1].body["components"] == [], "no buttons left on a decided approval"
        return edits[-1].text()


# -- the console -----------------------------------------------------------------------------
class ConsolePlatform:
    """The terminal: one person at the prompt. A button or a reaction is an answer at the
    prompt; "another user" is the prompt run as someone else (`--user`)."""

    name = "console"
    alice, mallory = "alice", "mallory"
    limit = None
    edits_in_place = reactions = rate_limits = False
    _keys: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, tmp_path: Any, db_url: str) -> None:
        self.tmp_path, self.db_url = tmp_path, db_url
        self.out = StringIO()
        self._runtime: Runtime | None = None
        self.adapter: ConsoleAdapter | None = None
        self._unmatched: list[str] = []

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None
        return self._runtime

    async def start(self, *, progress_interval_s: float = 0.2) -> None:
        # One process: its own prompt, fed through two queues (what it asked, what is typed).
        self.prompts: queue.Queue[str] = queue.Queue()
        self.answers: queue.Queue[str | None] = queue.Queue()
        self._unmatched = []
        prompts, answers = self.prompts, self.answers

        def prompt(question: str) -> str:
            prompts.put(question)
            answer = answers.get(timeout=WAIT_S)
            if answer is None:
                raise EOFError
            return answer

        self._runtime = Runtime(make_settings(self.tmp_path, self.db_url,
                                              offline_latency_ms=10.0), migrate=True)
        console = Console(file=self.out, width=200, force_terminal=False)
        self.adapter = ConsoleAdapter(self._runtime.swarm, console, user=self.alice,
                                      prompt=prompt)
        self._runtime.add_adapter(self.adapter)
        ids = await self._runtime.swarm.recover()
        self._runtime.start()
        for oid in ids:  # as `threadswarm resume` does: ask again what waits for a human
            for approval in self._runtime.swarm.pending_approvals(oid):
                self._ask_later(approval.id, approval.title)

    def _ask_later(self, approval_id: int, title: str) -> None:
        assert self.adapter is not None
        self.adapter._spawn(self.adapter.decide(approval_id, title))  # as prompts are held

    async def _stop(self) -> None:
        if self.adapter is not None:
            while self.adapter._tasks:  # every open prompt gets end-of-input
                self.answers.put(None)
                await asyncio.sleep(0.05)
        if self._runtime is not None:
            await self._runtime.close()
            self._runtime = None

    async def restart(self) -> None:
        await self._stop()
        await self.start()

    async def close(self) -> None:
        await self._stop()

    async def mention(self, goal: str) -> Any:
        key = f"console:conformance-{next(self._keys)}"
        thread = ThreadRef("console", "local", "console", key)
        await self.runtime.swarm.start_objective(goal, thread, self.alice, key)
        return thread, goal, key

    async def redeliver(self, mention: Any) -> None:
        thread, goal, key = mention
        await self.runtime.swarm.start_objective(goal, thread, self.alice, key)

    async def _asked(self, pattern: str, what: str) -> Shown:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = next((q for q in self._unmatched if re.search(pattern, q)), None)
            if found is not None:
                self._unmatched.remove(found)
                return Shown(None, found + "\n" + self.out.getvalue())
            try:
                self._unmatched.append(await asyncio.to_thread(self.prompts.get, True, 0.1))
            except queue.Empty:
                continue
        raise AssertionError(f"no prompt for {what}; asked: {self._unmatched}")

    async def plan(self) -> Shown:
        return await self._asked(r"Approve.*[Pp]lan", "the plan")

    async def step_approval(self) -> Shown:
        return await self._asked(r"Approve(?!.*[Pp]lan)", "the step approval")

    async def decide(self, shown: Shown, *, user: str, via: str, approve: bool = True) -> None:
        assert self.adapter is not None
        self.adapter.user = user
        self.answers.put("y" if approve else "n")

    async def refusal(self, user: str) -> str:
        def told() -> str | None:
            found = re.search(r"Only the requester[^\n]*", self.out.getvalue())
            return found.group(0) if found else None
        return str(await wait_for(told, "a refusal"))

    async def question(self) -> Shown:
        return await self._asked(r"^\[bold\]\?", "the question")

    async def reply(self, mention: Any, shown: Shown, text: str) -> None:
        self.answers.put(text)

    async def results(self, objective_id: int) -> str:
        await wait_for(lambda: f"Objective #{objective_id} finished" in self.out.getvalue(),
                       "the results")
        return self.out.getvalue()

    def progress(self) -> list[tuple[float, str]]:
        return [(0.0, line) for line in self.out.getvalue().splitlines() if " done · " in line]

    def fail_next_posts(self, times: int) -> None:
        raise NotImplementedError("the console has no rate limits")

    def post_statuses(self, needle: str) -> list[int]:
        raise NotImplementedError("the console has no rate limits")

    async def deliver_results(self, event: ObjectiveFinished) -> list[str]:
        assert self.adapter is not None
        before = len(self.out.getvalue())
        view = self.runtime.swarm.view(event.objective_id)
        assert view is not None
        await self.adapter.deliver(event, view.thread, "outbox:999")
        return [self.out.getvalue()[before:]]

    def accepted_count(self) -> int:
        return self.out.getvalue().count("(planning…)")

    async def decided(self, shown: Shown) -> str:
        def line() -> str | None:
            found = re.search(r"approved by [^\n]*", self.out.getvalue())
            return found.group(0) if found else None
        return str(await wait_for(line, "the decision"))


PLATFORMS = {"console": ConsolePlatform, "slack": SlackPlatform, "discord": DiscordPlatform}
