"""One `/swarm` grammar on every surface: the same commands and refusals through Slack's
slash command (admins known by the fake Web API's users.info), Discord's `/swarm` app command
(the real discord.py client; admins are members with Manage Server) and `threadswarm admin`."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import cli
from swarm.config import Settings
from swarm.services.objectives import Swarm
from swarm.store.models import AuditEntry, ThreadRef
from tests.conftest import make_settings, migrated
from tests.fakes.slack_api import TEAM_ID, FakeSlackAPI

ALICE, BOSS, CAROL, MALLORY = "U0ALICE", "U0BOSS", "U0CAROL", "U0MALLORY"
DAVE = "U0DAVE"  # made an admin by `admins add`, an ordinary member of his platform
Send = Callable[[str, str], Awaitable[str]]


@dataclass
class Surface:
    name: str
    swarm: Swarm  # a swarm on the same database, to start objectives and look at rows
    send: Send  # (user, text) -> the reply the user reads
    team: str
    private: Callable[[], bool]  # whether only the user saw the last reply
    ids: dict[str, str] = field(default_factory=dict)  # the platform's id of each user above

    def id(self, user: str) -> str:
        return self.ids.get(user, user)

    async def objective(self, goal: str = "launch our SaaS in Japan") -> int:
        thread_id = str(140000000000000000 + id(goal) % 10**6) if self.name == "discord" \
            else f"t-{goal[:8]}-{id(goal)}"
        channel = thread_id if self.name == "discord" else "C0GENERAL"
        thread = ThreadRef(self.name, self.team, channel, thread_id)
        started = await self.swarm.start_objective(goal, thread, self.id(ALICE),
                                                    f"k-{id(thread)}")
        await self.swarm.join()
        return started.objective_id

    def audited(self, action: str) -> list[AuditEntry]:
        with self.swarm.db.read() as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


async def _console(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                   ) -> AsyncIterator[Surface]:
    url = f"sqlite:///{tmp_path / 'threadswarm.db'}"
    settings = make_settings(tmp_path, url)
    db = migrated(url)
    swarm = Swarm(settings, db)

    async def send(user: str, text: str) -> str:
        capsys.readouterr()
        operator = ["--operator"] if user == BOSS else []  # the one who runs the server
        argv = ["admin", "--user", user, "--team", "local", *operator, *text.split()]
        args = cli.build_parser().parse_args(argv)
        await args.func(args, Settings(**settings.model_dump()))
        return capsys.readouterr().out

    try:
        yield Surface("console", swarm, send, "local", lambda: True)  # a terminal of one
    finally:
        await swarm.shutdown()
        db.close()


async def _slack(tmp_path: Path, api: FakeSlackAPI) -> AsyncIterator[Surface]:
    from tests.fakes.slack_bot import start_bot

    bot = await start_bot(tmp_path, f"sqlite:///{tmp_path / 'threadswarm.db'}", api)
    api.workspace_admins.add(BOSS)

    last: dict[str, str] = {}

    async def send(user: str, text: str) -> str:
        last.update((await bot.events.command(text, user=user)).json())
        return last["text"]

    try:
        yield Surface("slack", bot.runtime.swarm, send, TEAM_ID,
                      lambda: last.get("response_type") == "ephemeral")
    finally:
        await bot.close()


async def _discord(tmp_path: Path) -> AsyncIterator[Surface]:
    from tests.fakes.discord_bot import start_discord_bot
    from tests.fakes.discord_server import (
        ADMIN,
        GUILD_ID,
        MANAGE_GUILD,
        MEMBER_PERMISSIONS,
        FakeDiscord,
    )
    from tests.fakes.discord_server import ALICE as D_ALICE
    from tests.fakes.discord_server import MALLORY as D_MALLORY

    fake = await FakeDiscord().start()
    bot = await start_discord_bot(tmp_path, f"sqlite:///{tmp_path / 'threadswarm.db'}", fake)
    ids = {ALICE: D_ALICE, MALLORY: D_MALLORY, BOSS: ADMIN, CAROL: "130000000000000004",
           DAVE: "130000000000000005"}
    last: dict[str, object] = {}

    async def send(user: str, text: str) -> str:
        """`/swarm command:<text>` in #general; BOSS has Manage Server, nobody else."""
        permissions = MEMBER_PERMISSIONS | (MANAGE_GUILD if user == BOSS else 0)
        token = await fake.command(text, user=ids.get(user, user), permissions=permissions)
        [answer] = await fake.wait_for(lambda: [  # answered at once, or deferred then followed
            c for c in fake.answers(token) if c.path.startswith("/webhooks/")
            or c.body.get("type") == 4], what=f"the answer to {text!r}")
        data = answer.body.get("data", answer.body)
        last.update(data)
        return str(data["content"])

    try:
        yield Surface("discord", bot.runtime.swarm, send, GUILD_ID,
                      lambda: bool(int(str(last.get("flags", 0))) & 64), ids)
    finally:
        await bot.close()
        await fake.close()


@pytest.fixture(params=["console", "slack", "discord"])
async def surface(request: pytest.FixtureRequest, tmp_path: Path, api: FakeSlackAPI,
                  capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Surface]:
    made = {"console": lambda: _console(tmp_path, capsys), "slack": lambda: _slack(tmp_path, api),
            "discord": lambda: _discord(tmp_path)}[request.param]()
    yield await made.__anext__()
    await made.aclose()  # runs each surface's `finally`: its bot, swarm and fakes close


async def test_help_and_malformed_input_get_the_help_of_that_subcommand(
        surface: Surface) -> None:
    helped = await surface.send(ALICE, "help")
    for usage in ("status [ID]", "list [--all]", "cancel ID", "pause ID", "resume ID",
                  "budget [show", "approvers [list", "admins [list", "digest [CRON",
                  "every CRON GOAL", "memory [search", "roles", "audit ID", "ground ID"):
        assert usage in helped
    wrong = await surface.send(ALICE, "budget set team 5")  # dollars or tokens?
    assert "That is not how `budget` goes" in wrong and "budget set objective|team" in wrong
    assert "That is not how `cancel` goes" in await surface.send(ALICE, "cancel soon")
    assert "I don't know `frobnicate`" in await surface.send(ALICE, "frobnicate 3")
    assert "`approvers add|remove @USER`" in await surface.send(ALICE, "help approvers")


async def test_read_only_commands_are_open_to_everyone(surface: Surface) -> None:
    oid = await surface.objective()
    assert f"#{oid} awaiting_approval" in await surface.send(MALLORY, "list --all")
    assert f"#{oid} awaiting_approval" in await surface.send(MALLORY, "status")
    assert "s1 pending · researcher" in await surface.send(MALLORY, f"status {oid}")
    assert "`developer` (worker, needs approval)" in await surface.send(MALLORY, "roles")
    trail = await surface.send(MALLORY, f"audit {oid}")
    assert "objective.created" in trail and "plan.proposed" in trail
    assert "Audit log intact" in await surface.send(MALLORY, "audit verify")
    assert "Each objective: no limit" in await surface.send(MALLORY, "budget")
    assert "No recurring goals yet" in await surface.send(MALLORY, "every list")
    # the schedules' other commands change things or check someone's objective: refused
    assert "Only an admin" in await surface.send(MALLORY, "digest 0 9 * * 1") or \
        "channel it is for" in await surface.send(MALLORY, "digest 0 9 * * 1")
    assert "Only the requester" in await surface.send(MALLORY, f"ground {oid}")
    assert "not enabled" in await surface.send(MALLORY, "memory list")


async def test_cancel_pause_and_resume_need_the_requester_or_an_admin(
        surface: Surface) -> None:
    oid = await surface.objective()
    for verb in ("cancel", "pause", "resume"):
        refused = await surface.send(MALLORY, f"{verb} {oid}")
        assert refused.startswith(f"Only the requester or an admin can {verb}"), refused
        assert surface.private(), "a refusal is told to the one refused only"
    assert surface.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    assert len(surface.audited("objective.cancel_refused")) == 1
    # the admin passes the check; the state machine then has its say
    assert "is awaiting_approval, not running" in await surface.send(BOSS, f"pause {oid}")
    assert f"Objective #{oid} cancelled." in await surface.send(BOSS, f"cancel {oid}")
    [entry] = surface.audited("objective.cancelled")
    assert entry.actor == surface.id(BOSS) and entry.detail["where"].startswith(surface.name)


async def test_admins_change_budgets_approvers_and_admins_and_it_is_kept(
        surface: Surface) -> None:
    carol, dave = surface.id(CAROL), surface.id(DAVE)
    for text in ("budget set team $50", f"approvers add <@{carol}>", f"admins add @{carol}",
                 f"admins remove @{surface.id(BOSS)}", f"approvers remove @{carol}",
                 "memory forget 3"):
        assert (await surface.send(MALLORY, text)).startswith("Only an admin"), text
        assert surface.private(), text
    assert len(surface.audited("admin.refused")) == 6
    assert "Budget set" in await surface.send(BOSS, "budget set team $50")
    assert "Budget set" in await surface.send(BOSS, "budget set objective 20k tokens")
    shown = await surface.send(MALLORY, "budget show")
    assert "Each objective: 20,000 tokens" in shown and "per month: $50.0000" in shown
    assert "is now one of this team's approvers" in await surface.send(
        BOSS, f"approvers add <@{carol}|carol>")
    assert "already" in await surface.send(BOSS, f"approvers add @{carol}")
    assert f"Approvers: {carol}" in await surface.send(MALLORY, "approvers")
    assert "is now one of this team's admins" in await surface.send(BOSS, f"admins add @{dave}")
    assert "Budget set" in await surface.send(DAVE, "budget set team off")
    # kept in the database, per team: a fresh swarm on it (a restart) sees the same
    fresh = Swarm(surface.swarm.settings, surface.swarm.db)
    with fresh.db.read() as s:
        objective, team = fresh.budget.defaults(s, surface.team)
        assert objective.tokens == 20_000 and team.unlimited
        assert fresh.budget.defaults(s, "another-team")[0].unlimited
    assert dave in await surface.send(MALLORY, "admins list")
    assert {e.action for e in surface.audited("budget.set")} == {"budget.set"}
    assert len(surface.audited("budget.set")) == 3


async def test_an_approver_decides_approvals_and_nothing_more(surface: Surface) -> None:
    assert "approvers" in await surface.send(BOSS, f"approvers add @{surface.id(CAROL)}")
    oid = await surface.objective()
    [plan] = surface.swarm.pending_approvals(oid)
    assert not (await surface.swarm.decide(plan.id, surface.id(MALLORY), True)).ok
    assert (await surface.swarm.decide(plan.id, surface.id(CAROL), True)).ok
    assert (await surface.send(CAROL, f"cancel {oid}")).startswith("Only the requester")
