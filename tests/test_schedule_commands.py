"""The schedules' `/swarm` subcommands: digests and recurring goals per channel, for admins,
with clear answers to bad input; each change reaches a running clock at once."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from bot.commands import handle
from schedules.tables import DigestSchedule, RecurringGoal
from swarm.services.objectives import Swarm
from tests.clocks import clock_for

TEAM = "T0TEAM"
HERE: dict[str, Any] = {"platform": "slack", "channel_id": "C0GENERAL"}  # where it is typed


async def test_an_admin_sets_and_turns_off_a_channels_digest(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(admins=["U0ADMIN"])
    clock = clock_for(swarm)
    clock.start()
    try:
        refused = await handle(swarm, "U0ALICE", TEAM, "digest 0 9 * * 1-5", **HERE)
        assert refused.ephemeral and refused.text.startswith("Only an admin")
        nowhere = await handle(swarm, "U0ADMIN", TEAM, "digest 0 9 * * 1-5")
        assert "channel it is for" in nowhere.text
        bad = await handle(swarm, "U0ADMIN", TEAM, "digest 0 25 * * *", **HERE)
        assert bad.ephemeral and "not a cron I can read" in bad.text
        short = await handle(swarm, "U0ADMIN", TEAM, "digest 9 * *", **HERE)
        assert "five fields" in short.text
        assert "digest:" not in " ".join(clock.job_ids())  # nothing was set by bad input

        done = await handle(swarm, "U0ADMIN", TEAM, "digest 0 9 * * 1-5", **HERE)
        assert not done.ephemeral and "`0 9 * * 1-5` (UTC)" in done.text and "next" in done.text
        again = await handle(swarm, "U0ADMIN", TEAM, "digest 30 17 * * 5", **HERE)
        assert "`30 17 * * 5`" in again.text
        with swarm.db.read() as s:
            [row] = s.scalars(select(DigestSchedule))
        assert row.cron == "30 17 * * 5" and row.channel_id == "C0GENERAL"
        job = clock.scheduler.get_job(f"digest:{row.id}")
        assert job is not None and "hour='17'" in str(job.trigger)

        off = await handle(swarm, "U0ADMIN", TEAM, "digest off", **HERE)
        assert off.text == "This channel's digest is off."
        assert clock.scheduler.get_job(f"digest:{row.id}") is None
        assert (await handle(swarm, "U0ADMIN", TEAM, "digest off", **HERE)).text == \
            "This channel has no digest."
    finally:
        clock.shutdown()


async def test_recurring_goals_are_added_listed_and_removed(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(admins=["U0ADMIN"])
    clock = clock_for(swarm)
    clock.start()
    try:
        assert (await handle(swarm, "U0ADMIN", TEAM, "every list", **HERE)).text.startswith(
            "No recurring goals yet")
        refused = await handle(swarm, "U0ALICE", TEAM, "every 0 9 * * 1 weekly report", **HERE)
        assert refused.text.startswith("Only an admin")
        for text, answer in (
                ("every 0 9 * * 1", "Give a cron and a goal"),
                ("every 0 9 * * 1 weekly report --policy yolo", "one of ask, auto, deny"),
                ("every 0 9 * * 1 weekly report --budget lots", "number of USD per run"),
                ("every 0 9 * * 1 weekly report --policy", "`--policy` needs a value"),
                ("every 0 9 * * 1 weekly report --tier huge", "one of planner, worker, fast"),
                ("every 0 99 * * 1 weekly report", "not a cron I can read")):
            reply = await handle(swarm, "U0ADMIN", TEAM, text, **HERE)
            assert answer in reply.text, (text, reply.text)
        added = await handle(swarm, "U0ADMIN", TEAM, "every 0 9 * * 1 Write the weekly report "
                             "--policy auto --budget 2.50 --tier fast", **HERE)
        assert added.text.startswith("Recurring goal #1: `0 9 * * 1` (UTC), policy auto, "
                                     "budget $2.50 per run, workers on the fast tier")
        quoted = await handle(swarm, "U0ADMIN", TEAM, 'every "*/30 * * * *" Check the status '
                              'page', **HERE)
        assert "#2: `*/30 * * * *`" in quoted.text and "policy ask" in quoted.text
        listed = await handle(swarm, "U0ALICE", TEAM, "every list", **HERE)
        assert ("#1 `0 9 * * 1` · policy auto · budget $2.50 per run · workers on the fast "
                "tier") in listed.text
        assert "#2 `*/30 * * * *` · policy ask · no budget of its own" in listed.text
        assert "next" in listed.text and "Write the weekly report" in listed.text
        assert {"recurring:1", "recurring:2"} <= set(clock.job_ids())

        other = await handle(swarm, "U0ADMIN", "T0OTHER", "every remove 1", **HERE)
        assert other.text.startswith("There is no recurring goal #1 here")
        assert "Give the recurring goal's number" in (
            await handle(swarm, "U0ADMIN", TEAM, "every remove soon", **HERE)).text
        removed = await handle(swarm, "U0ADMIN", TEAM, "every remove #1", **HERE)
        assert removed.text.startswith("Recurring goal #1 removed")
        assert "recurring:1" not in clock.job_ids() and "recurring:2" in clock.job_ids()
        with swarm.db.read() as s:
            assert [g.id for g in s.scalars(select(RecurringGoal))] == [2]
    finally:
        clock.shutdown()


async def test_a_change_made_where_no_clock_runs_reaches_the_clock_at_its_next_sync(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(admins=["U0ADMIN"])
    reply = await handle(swarm, "U0ADMIN", TEAM, "digest 0 9 * * *", **HERE)
    assert "next" not in reply.text  # no clock in this process
    clock = clock_for(swarm)
    clock.start()  # the clock process starts (or syncs): it reads the row
    try:
        assert any(j.startswith("digest:") for j in clock.job_ids())
    finally:
        clock.shutdown()
