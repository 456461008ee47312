"""One `/swarm` grammar on every surface: the same commands and refusals through Slack's
slash command (admins known by the fake Web API's users.info) and `threadswarm admin`."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import cli
from swarm.config import Settings
from swarm.services.objectives import Swarm
from swarm.store.db import Database
from swarm.store.models import AuditEntry, ThreadRef
from tests.conftest import make_settings
from tests.fakes.slack_api import TEAM_ID, FakeSlackAPI

ALICE, BOSS, CAROL, MALLORY = "U0ALICE", "U0BOSS", "U0CAROL", "U0MALLORY"
Send = Callable[[str, str], Awaitable[str]]


@dataclass
class Surface:
    name: str
    swarm: Swarm  # a swarm on the same database, to start objectives and look at rows
    send: Send  # (user, text) -> the reply the user reads
    team: str

    async def objective(self, goal: str = "launch our SaaS in Japan") -> int:
        thread = ThreadRef(self.name, self.team, "C0GENERAL", f"t-{goal[:8]}-{id(goal)}")
        started = await self.swarm.start_objective(goal, thread, ALICE, f"k-{id(thread)}")
        await self.swarm.join()
        return started.objective_id

    def audited(self, action: str) -> list[AuditEntry]:
        with self.swarm.db.read() as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


async def _console(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                   ) -> AsyncIterator[Surface]:
    url = f"sqlite:///{tmp_path / 'threadswarm.db'}"
    settings = make_settings(tmp_path, url)
    db = Database.connect(url)
    swarm = Swarm(settings, db)

    async def send(user: str, text: str) -> str:
        capsys.readouterr()
        operator = ["--operator"] if user == BOSS else []  # the one who runs the server
        argv = ["admin", "--user", user, "--team", "local", *operator, *text.split()]
        args = cli.build_parser().parse_args(argv)
        await args.func(args, Settings(**settings.model_dump()))
        return capsys.readouterr().out

    yield Surface("console", swarm, send, "local")
    await swarm.shutdown()
    db.close()


async def _slack(tmp_path: Path, api: FakeSlackAPI) -> AsyncIterator[Surface]:
    from tests.fakes.slack_bot import start_bot

    bot = await start_bot(tmp_path, f"sqlite:///{tmp_path / 'threadswarm.db'}", api)
    api.workspace_admins.add(BOSS)

    async def send(user: str, text: str) -> str:
        return str((await bot.events.command(text, user=user)).json()["text"])

    yield Surface("slack", bot.runtime.swarm, send, TEAM_ID)
    await bot.close()


@pytest.fixture(params=["console", "slack"])
async def surface(request: pytest.FixtureRequest, tmp_path: Path, api: FakeSlackAPI,
                  capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Surface]:
    made = _console(tmp_path, capsys) if request.param == "console" else _slack(tmp_path, api)
    yield await made.__anext__()
    await made.aclose()


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
    assert surface.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    assert len(surface.audited("objective.cancel_refused")) == 1
    # the admin passes the check; the state machine then has its say
    assert "is awaiting_approval, not running" in await surface.send(BOSS, f"pause {oid}")
    assert f"Objective #{oid} cancelled." in await surface.send(BOSS, f"cancel {oid}")
    [entry] = surface.audited("objective.cancelled")
    assert entry.actor == BOSS and entry.detail["where"].startswith(surface.name)


async def test_admins_change_budgets_approvers_and_admins_and_it_is_kept(
        surface: Surface) -> None:
    for text in ("budget set team $50", "approvers add <@U0CAROL>", "admins add @U0CAROL",
                 "admins remove @U0BOSS", "approvers remove @U0CAROL", "memory forget 3"):
        assert (await surface.send(MALLORY, text)).startswith("Only an admin"), text
    assert len(surface.audited("admin.refused")) == 6
    assert "Budget set" in await surface.send(BOSS, "budget set team $50")
    assert "Budget set" in await surface.send(BOSS, "budget set objective 20k tokens")
    shown = await surface.send(MALLORY, "budget show")
    assert "Each objective: 20,000 tokens" in shown and "per month: $50.0000" in shown
    assert "is now one of this team's approvers" in await surface.send(
        BOSS, "approvers add <@U0CAROL|carol>")
    assert "already" in await surface.send(BOSS, "approvers add @U0CAROL")
    assert "Approvers: U0CAROL" in await surface.send(MALLORY, "approvers")
    assert "is now one of this team's admins" in await surface.send(BOSS, "admins add @U0DAVE")
    assert "Budget set" in await surface.send("U0DAVE", "budget set team off")
    # kept in the database, per team: a fresh swarm on it (a restart) sees the same
    fresh = Swarm(surface.swarm.settings, surface.swarm.db)
    with fresh.db.read() as s:
        objective, team = fresh.budget.defaults(s, surface.team)
        assert objective.tokens == 20_000 and team.unlimited
        assert fresh.budget.defaults(s, "another-team")[0].unlimited
    assert "U0DAVE" in await surface.send(MALLORY, "admins list")
    assert {e.action for e in surface.audited("budget.set")} == {"budget.set"}
    assert len(surface.audited("budget.set")) == 3


async def test_an_approver_decides_approvals_and_nothing_more(surface: Surface) -> None:
    assert "approvers" in await surface.send(BOSS, "approvers add @U0CAROL")
    oid = await surface.objective()
    [plan] = surface.swarm.pending_approvals(oid)
    assert not (await surface.swarm.decide(plan.id, MALLORY, True)).ok
    assert (await surface.swarm.decide(plan.id, CAROL, True)).ok
    assert (await surface.send(CAROL, f"cancel {oid}")).startswith("Only the requester")
