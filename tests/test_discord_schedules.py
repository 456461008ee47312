"""The schedules on Discord, end to end: a drift notice with its Approve / Reject buttons, and a
plan approval reminded, then expired in place (its buttons gone)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.fakes.discord_bot import start_discord_bot
from tests.fakes.discord_server import FakeDiscord
from tests.test_discord import approve_step_and_finish, click, mention, with_buttons

DRIFTING = "Plan an organic-only launch campaign for our SaaS in Japan [drift-after:2]"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


async def test_drift_is_posted_with_its_buttons_and_the_correction_finishes_the_work(
        tmp_path: Any, db_url: str, fake: FakeDiscord) -> None:
    bot = await start_discord_bot(tmp_path, db_url, fake)
    try:
        plan, event = await mention(fake, DRIFTING)
        assert "must: organic-only" in plan.text()
        await click(fake, plan)
        [drift] = await fake.wait_for(lambda: with_buttons(fake, "Drift detected"),
                                      what="the drift notice")
        assert drift.path == f"/channels/{event['id']}/messages", "posted in the thread"
        assert "paid search" in drift.text() and "Prepare the rollout" in drift.text()
        [check] = bot.runtime.swarm.pending_approvals(bot.runtime.swarm.objectives()[0].id)
        assert check.kind == "drift"
        assert drift.custom_ids == [f"approve:{check.id}", f"reject:{check.id}"]
        await click(fake, drift)  # apply the correction
        await approve_step_and_finish(fake, check.objective_id)
    finally:
        await bot.close()


async def test_a_plan_approval_is_reminded_then_expires_in_place(
        tmp_path: Any, db_url: str, fake: FakeDiscord) -> None:
    bot = await start_discord_bot(tmp_path, db_url, fake,
                                  approval_sweep_every=timedelta(seconds=0.1),
                                  approval_remind_after=timedelta(seconds=0.3),
                                  approval_expire_after=timedelta(seconds=1.5))
    try:
        plan, event = await mention(fake, "launch our SaaS in Japan")
        bot.runtime.start_clock()
        [reminder] = await fake.wait_for(lambda: fake.posted("Reminder: approval"),
                                         what="the reminder")
        assert reminder.path == f"/channels/{event['id']}/messages"
        expired = await fake.wait_for(lambda: [c for c in fake.edits_of(plan.answer["id"])
                                               if "Expired" in c.text()], what="the expiry")
        assert not expired[-1].custom_ids, "an expired approval keeps no buttons"
        assert bot.runtime.swarm.objectives()[0].state == "paused"
    finally:
        await bot.close()
