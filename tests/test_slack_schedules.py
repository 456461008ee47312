"""The schedules in Slack, end to end: a drift notice with its choices, a reminder in the
thread, an expired approval's message edited, a channel digest, and a recurring objective
that opens its own thread."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import start_bot
from tests.test_slack import ALICE, CHANNEL, action_ids, approve_step_and_finish, click, mention

DRIFTING = "Plan an organic-only launch campaign for our SaaS in Japan [drift-after:2]"


def _text(call: Any) -> str:
    return call.params.get("text", "") + str(call.params.get("blocks", ""))


async def test_drift_is_posted_with_its_choices_and_the_correction_finishes_the_work(
        tmp_path: Any, db_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, db_url, api)
    try:
        plan, mention_ts = await mention(bot, api, DRIFTING)
        assert "*Constraints*" in _text(plan) and "must: organic-only" in _text(plan)
        await click(bot, plan)
        [drift] = await api.wait_for(lambda: api.posted("Drift detected"), what="the notice")
        assert drift.params["thread_ts"] == mention_ts
        body = _text(drift)
        assert "organic-only" in body and "paid search" in body and "Prepare the rollout" in body
        [check] = bot.runtime.swarm.pending_approvals(bot.runtime.swarm.objectives()[0].id)
        assert action_ids(drift) == [f"approve:{check.id}", f"reject:{check.id}"]
        await click(bot, drift)  # apply the correction
        await approve_step_and_finish(bot, api, check.objective_id)
    finally:
        await bot.close()


async def test_reminder_expiry_digest_and_a_recurring_thread_in_slack(
        tmp_path: Any, db_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, db_url, api, swarm_settings={
        "admins": [ALICE], "approval_sweep_every": timedelta(seconds=0.1),
        "approval_remind_after": timedelta(seconds=0.4),
        "approval_expire_after": timedelta(seconds=3)})
    try:
        set_digest = await bot.events.command("digest * * * * * *", user=ALICE)
        assert set_digest.status == 200 and "Digest for this channel" in set_digest.body
        soon = (datetime.now().second + 2) % 60
        every = await bot.events.command(f'every "{soon} * * * * *" Write the weekly report',
                                         user=ALICE)
        assert "Recurring goal #1" in every.body
        plan, mention_ts = await mention(bot, api, "launch our SaaS in Japan")
        bot.runtime.start_clock()

        # (the recurring objective's plan, policy ask, is reminded too, in its own thread)
        await api.wait_for(lambda: [c for c in api.posted("Still waiting")
                                    if c.params.get("thread_ts") == mention_ts],
                           what="the reminder in the thread")
        expired = await api.wait_for(lambda: [
            c for c in api.to("chat.update") if c.params["ts"] == plan.answer["ts"]
            and "Expired after" in _text(c)], what="the plan message edited")
        assert not action_ids(expired[-1])  # its buttons are gone
        digest = await api.wait_for(lambda: api.posted("Status digest"), what="a digest")
        assert digest[0].params["channel"] == CHANNEL and "thread_ts" not in digest[0].params

        # the recurring objective's first message opens its thread; the rest go in it
        opened = await api.wait_for(lambda: [c for c in api.posted("Write the weekly report")
                                             if "On it" in _text(c)], what="the recurring start")
        assert "thread_ts" not in opened[0].params
        root = opened[0].answer["ts"]
        rplan = await api.wait_for(lambda: [c for c in api.posted("*Plan v1")
                                            if c.params.get("thread_ts") == root],
                                   what="its plan in its thread")
        assert action_ids(rplan[0])
    finally:
        await bot.close()
