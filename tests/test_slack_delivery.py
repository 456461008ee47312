"""Slack deliveries that fail: retried without posting twice."""
from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from swarm.models import OutboxEvent
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import Bot, start_bot
from tests.test_slack import ALICE, click, mention, objective_id, with_buttons


def outbox(bot: Bot, kind: str | None = None) -> list[OutboxEvent]:
    with bot.runtime.db.read() as s:
        query = select(OutboxEvent).order_by(OutboxEvent.id)
        return list(s.scalars(query if kind is None else query.where(OutboxEvent.kind == kind)))


async def test_a_state_change_whose_progress_edit_failed_is_posted_once(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api, rate_limit_retries=1)
    try:
        plan, _ = await mention(bot, api, "launch our SaaS in Japan")
        oid = objective_id(bot)
        await click(bot, plan)
        await api.wait_for(lambda: with_buttons(api, "Approval needed"), what="s5's approval")
        await bot.runtime.settle()
        await asyncio.sleep(0.5)  # past the progress throttle: the next edit goes out at once
        api.rate_limit("chat.update", times=2, retry_after=0)  # past the client's one retry
        assert (await bot.runtime.swarm.pause(oid, ALICE)).ok
        await api.wait_for(lambda: outbox(bot, "ObjectiveStateChanged")[-1].delivered_at,
                           what="the state change delivered")
        assert outbox(bot, "ObjectiveStateChanged")[-1].attempts == 1, "its first try failed"
        assert len(api.posted("Paused by")) == 1, "the retry edits, and posts nothing again"
    finally:
        await bot.close()
