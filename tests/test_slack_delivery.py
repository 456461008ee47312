"""Slack deliveries that fail: retried without posting twice, given up on when Slack says no."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from sqlalchemy import select

from swarm.store.models import OutboxEvent
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import Bot, start_bot
from tests.test_slack import (
    ALICE,
    CHANNEL,
    approve_step_and_finish,
    click,
    mention,
    objective_id,
    progress_edits,
    with_buttons,
)

ARCHIVED = "C0ARCHIVED"


def outbox(bot: Bot, kind: str | None = None) -> list[OutboxEvent]:
    with bot.runtime.db.read() as s:
        query = select(OutboxEvent).order_by(OutboxEvent.id)
        return list(s.scalars(query if kind is None else query.where(OutboxEvent.kind == kind)))


def settled(bot: Bot) -> bool:
    return all(r.delivered_at or r.dead_at for r in outbox(bot))


async def running_until_the_step_approval(bot: Bot, api: FakeSlackAPI) -> int:
    """An objective whose plan is approved, waiting for its risky step's approval."""
    plan, _ = await mention(bot, api, "launch our SaaS in Japan")
    await click(bot, plan)
    await api.wait_for(lambda: with_buttons(api, "Approval needed"), what="s5's approval")
    return objective_id(bot)


async def test_a_state_change_whose_progress_edit_failed_is_posted_once(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api, rate_limit_retries=1)
    try:
        oid = await running_until_the_step_approval(bot, api)
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


async def test_an_archived_channels_events_are_given_up_at_once_and_others_go_on(
        bot: Bot, api: FakeSlackAPI) -> None:
    api.refuse("chat.postMessage", "is_archived", channel=ARCHIVED)
    await bot.events.event(bot.events.mention_event("launch in the old channel",
                                                    channel=ARCHIVED))
    await api.wait_for(lambda: len(outbox(bot)) >= 2 and settled(bot), what="given up")
    await mention(bot, api, "launch our SaaS in Japan")  # another thread is unaffected
    assert api.posted("On it")[0].params["channel"] == CHANNEL
    archived = [r for r in outbox(bot) if ARCHIVED in r.thread_key]
    assert {r.kind for r in archived} >= {"ObjectiveAccepted", "PlanProposed"}
    assert all(r.dead_at and r.attempts == 1 and r.last_error == "is_archived"
               for r in archived)
    tries = [c for c in api.to("chat.postMessage", ok_only=False)
             if c.params["channel"] == ARCHIVED]
    assert len(tries) == len(archived), "one try each, and no notice to a closed channel"


async def test_a_message_slack_refuses_as_too_long_is_replaced_by_a_notice(
        bot: Bot, api: FakeSlackAPI) -> None:
    api.refuse("chat.postMessage", "msg_too_long", needle="On it")
    plan, thread_ts = await mention(bot, api, "launch our SaaS in Japan")
    notice = await api.wait_for(lambda: api.posted("could not be posted"), what="a notice")
    assert notice[0].params["thread_ts"] == thread_ts
    assert "ObjectiveAccepted" in notice[0].text() and "msg_too_long" in notice[0].text()
    accepted = outbox(bot, "ObjectiveAccepted")[0]
    assert accepted.dead_at is not None and accepted.last_error == "msg_too_long"
    assert plan.params["thread_ts"] == thread_ts, "the thread went on"


async def test_a_deleted_progress_message_floods_no_notices_and_the_results_still_come(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, _ = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    api.refuse("chat.update", "message_not_found")  # someone deleted what the bot edits
    await click(bot, plan)
    await approve_step_and_finish(bot, api, oid)
    await api.wait_for(lambda: settled(bot), what="every row settled")
    dead = [r for r in outbox(bot) if r.dead_at]
    assert dead and all(r.last_error == "message_not_found" for r in dead)
    assert not api.posted("could not be posted"), "no notice per refused edit"


async def test_shutdown_with_slack_unreachable_ends_in_10s_and_leaves_the_edits_owed(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI,
        caplog: pytest.LogCaptureFixture) -> None:
    # A 30 s throttle: after the progress message is posted, every edit of it waits (is owed).
    first = await start_bot(tmp_path, sqlite_url, api, progress_interval_s=30.0)
    oid = await running_until_the_step_approval(first, api)
    await first.runtime.settle()
    posted, edits = progress_edits(api)
    view = first.runtime.swarm.view(oid)
    assert view is not None
    latest = f"{sum(st.state == 'finished' for st in view.steps)}/{len(view.steps)} steps done"
    assert latest not in posted.text() and not edits, "the edit showing the latest is owed"

    api.stall()  # Slack unreachable: connections taken, never answered
    await first.events.event(first.events.mention_event("plan the offsite"))
    await api.wait_for(lambda: api.stalled_calls > 0, what="a call that hangs")
    caplog.clear()
    started = time.monotonic()
    await first.close()  # what serve does on SIGTERM
    took = time.monotonic() - started
    assert took < 10.0, f"shutdown took {took:.1f}s"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    waiting = [r for r in outbox(first) if not (r.delivered_at or r.dead_at)]
    assert {r.objective_id for r in waiting} >= {oid, oid + 1}, \
        "the owed edit and the undelivered posts are left in the outbox"

    api.flow()
    second = await start_bot(tmp_path, sqlite_url, api)  # the next process
    try:
        await api.wait_for(lambda: any(latest in c.text() for c in progress_edits(api)[1]),
                           what="the owed edit, made by the next process")
        await api.wait_for(lambda: api.posted("plan the offsite"), what="the undelivered post")
        # each message once (its plan may follow at once, and names the goal too)
        texts = [c.params.get("text") for c in api.posted("plan the offsite")]
        assert len(texts) == len(set(texts)) and len(api.posted("steps done")) == 1
    finally:
        await second.close()
