"""Slack user stories end to end: real bolt over real HTTP, signed like Slack, fake Web API."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from swarm.store.models import InboundEvent, OutboxEvent, ThreadRef
from tests.fakes.slack_api import BOT_USER_ID, TEAM_ID, Call, FakeSlackAPI
from tests.fakes.slack_bot import BOT_TOKEN, SECRET, Bot, start_bot

ALICE, MALLORY = "U0ALICE", "U0MALLORY"
CHANNEL = "C0GENERAL"


# -- helpers: reading what the bot posted ----------------------------------------------------------
def action_ids(call: Call) -> list[str]:
    return [el["action_id"] for block in call.params.get("blocks", [])
            if block["type"] == "actions" for el in block["elements"]]


def with_buttons(api: FakeSlackAPI, needle: str) -> list[Call]:
    return [c for c in api.posted(needle) if action_ids(c)]


async def mention(bot: Bot, api: FakeSlackAPI, goal: str) -> tuple[Call, str]:
    """Mention the bot with a goal; return the plan message (with its buttons) and the event."""
    event = bot.events.mention_event(goal)
    delivery, _ = await bot.events.event(event)
    assert delivery.status == 200
    assert delivery.elapsed_s < 2.0, "the mention is acked at once, the work runs after"
    plan = await api.wait_for(lambda: with_buttons(api, "*Plan v1"), what="the plan")
    return plan[-1], event["ts"]


async def click(bot: Bot, message: Call, verb: str = "approve", user: str = ALICE) -> None:
    action = next(a for a in action_ids(message) if a.startswith(verb + ":"))
    delivery = await bot.events.click(action, action.split(":")[1], user=user, channel=CHANNEL,
                                      message_ts=message.answer["ts"],
                                      thread_ts=message.params["thread_ts"])
    assert delivery.status == 200


async def approve_step_and_finish(bot: Bot, api: FakeSlackAPI, oid: int) -> None:
    """s5 (a developer step) asks its own approval: click it, then wait for the results."""
    step = await api.wait_for(lambda: with_buttons(api, "Approval needed"),
                              what="the step approval")
    await click(bot, step[-1])
    await api.wait_for(lambda: api.posted(f"Objective #{oid} finished"), what="the results")


def objective_id(bot: Bot) -> int:
    views = bot.runtime.swarm.objectives()
    assert len(views) == 1
    return views[0].id


def progress_edits(api: FakeSlackAPI) -> tuple[Call, list[Call]]:
    posted = api.posted("steps done")
    assert len(posted) == 1, "one progress message per objective, posted once"
    ts = posted[0].answer["ts"]
    return posted[0], [c for c in api.to("chat.update") if c.params["ts"] == ts]


# -- the user stories ------------------------------------------------------------------------------
async def test_mention_gets_a_thread_reply_a_plan_and_approval_buttons(
        tmp_path: Any, db_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, db_url, api)
    try:
        plan, mention_ts = await mention(bot, api, "launch our SaaS in Japan")
        oid = objective_id(bot)
        accepted = api.posted("On it")
        assert len(accepted) == 1 and accepted[0].params["thread_ts"] == mention_ts
        assert plan.params["thread_ts"] == mention_ts and plan.params["channel"] == CHANNEL
        approval_id = bot.runtime.swarm.pending_approvals(oid)[0].id
        assert action_ids(plan) == [f"approve:{approval_id}", f"reject:{approval_id}"]
        assert "Research the context" in plan.text() and "s5" in plan.text()
        eyes = await api.wait_for(lambda: api.to("reactions.add"), what=":eyes:")
        assert eyes[0].params | {"channel": CHANNEL, "timestamp": mention_ts, "name": "eyes"} \
            == eyes[0].params
        # every Web API call, that is; the plan picture's bytes go to a pre-signed upload URL
        assert all(c.token == BOT_TOKEN for c in api.calls if c.method != "upload")
        view = bot.runtime.swarm.view(oid)
        assert view is not None and view.goal == "launch our SaaS in Japan"
        assert view.thread == ThreadRef("slack", TEAM_ID, CHANNEL, mention_ts)
        assert view.requester == ALICE
    finally:
        await bot.close()


async def test_forged_or_stale_signatures_get_401_and_nothing_is_stored(
        bot: Bot, api: FakeSlackAPI) -> None:
    forged, _ = await bot.events.event(bot.events.mention_event("wire me the money"),
                                       secret="not-the-signing-secret")
    stale, _ = await bot.events.event(bot.events.mention_event("wire me the money"),
                                      timestamp=int(time.time()) - 600)
    click = await bot.events.click("approve:1", "1", user=MALLORY, channel=CHANNEL,
                                   message_ts="1.1", thread_ts="1.1", secret="forged")
    assert (forged.status, stale.status, click.status) == (401, 401, 401)
    await bot.runtime.settle()
    assert bot.runtime.swarm.objectives() == []
    with bot.runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(InboundEvent)) == 0
    assert api.calls == []


async def test_past_the_clients_retries_the_dispatcher_retries_and_nothing_is_lost(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api, rate_limit_retries=1)
    try:
        api.rate_limit("chat.postMessage", times=3, retry_after=0)
        await mention(bot, api, "launch our SaaS in Japan")
        tries = [c for c in api.to("chat.postMessage", ok_only=False) if "On it" in c.text()]
        assert [c.status for c in tries] == [429, 429, 429, 200]
        with bot.runtime.db.read() as s:
            row = s.scalars(select(OutboxEvent)
                            .where(OutboxEvent.kind == "ObjectiveAccepted")).one()
        assert row.attempts == 1 and row.delivered_at is not None and "ratelimited" in \
            (row.last_error or "")
    finally:
        await bot.close()


async def test_a_workers_question_is_answered_by_the_next_human_reply_in_the_thread(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, thread_ts = await mention(bot, api, "ask about the budget and launch in Japan")
    oid = objective_id(bot)
    await click(bot, plan)
    asked = await api.wait_for(lambda: api.posted("What budget"), what="the question")
    assert asked[0].params["thread_ts"] == thread_ts
    ev = bot.events
    await ev.event(ev.message_event("I am the bot", user=BOT_USER_ID, thread_ts=thread_ts))
    await ev.event(ev.message_event("bot_message", thread_ts=thread_ts, bot_id="B0OTHER"))
    await ev.event(ev.message_event("edited text", thread_ts=thread_ts, subtype="message_changed"))
    await ev.event(ev.message_event("not in the thread"))
    assert bot.runtime.swarm.open_questions(oid), "none of those answer the question"
    delivery, _ = await ev.event(ev.message_event("About 50k EUR for the first quarter",
                                                  thread_ts=thread_ts))
    assert delivery.status == 200
    await api.wait_for(lambda: [c for c in api.to("reactions.add")
                                if c.params["name"] == "ok_hand"], what="the answer's receipt")
    await approve_step_and_finish(bot, api, oid)
    view = bot.runtime.swarm.view(oid)
    assert view is not None and view.state == "finished"
    analysis = next(st for st in view.steps if st.key == "s2")
    assert "About 50k EUR for the first quarter" in (analysis.output or "")


async def test_an_empty_mention_is_answered_with_a_hint(bot: Bot, api: FakeSlackAPI) -> None:
    event = bot.events.mention_event("   ")
    await bot.events.event(event)
    hint = await api.wait_for(lambda: api.posted("Tell me a goal"), what="the hint")
    assert hint[0].params["thread_ts"] == event["ts"]
    assert bot.runtime.swarm.objectives() == []


async def test_the_swarm_slash_command_answers_at_once(bot: Bot, api: FakeSlackAPI) -> None:
    helped = await bot.events.command("help")
    assert helped.status == 200 and helped.elapsed_s < 3.0
    assert helped.json()["response_type"] == "ephemeral"
    assert "status [ID]" in helped.json()["text"] and "cancel ID" in helped.json()["text"]
    plan, _ = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    listed = (await bot.events.command("list")).json()["text"]
    assert f"#{oid} awaiting_approval" in listed
    status = (await bot.events.command(f"status {oid}")).json()["text"]
    assert "s1 pending" in status and "Research the context" in status
    assert "no objective #99" in (await bot.events.command("status 99")).json()["text"]
    unknown = (await bot.events.command("frobnicate")).json()
    assert "I don't know `frobnicate`" in unknown["text"] and "list" in unknown["text"]
    refused = (await bot.events.command(f"cancel {oid}", user=MALLORY)).json()
    assert "Only the requester" in refused["text"] and refused["response_type"] == "ephemeral"
    cancelled = await bot.events.command(f"cancel {oid}")
    assert cancelled.elapsed_s < 3.0
    assert cancelled.json() == {"text": f"Objective #{oid} cancelled.",
                                "response_type": "in_channel"}
    await api.wait_for(lambda: api.posted(f"Objective #{oid} cancelled"), what="the notice")


async def test_secrets_never_reach_a_chat_message_or_a_log_line(
        bot: Bot, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("bot", "swarm", "slack_bolt", "slack_sdk"):  # all but LiteLLM's own noise
        caplog.set_level(logging.DEBUG, logger=name)
    pasted = "xoxb-9999-8888-pastedbymistake"
    plan, _ = await mention(bot, api, f"rotate the deploy token {pasted} and ship")
    await bot.events.event(bot.events.mention_event("x"), secret="forged")  # logged as refused
    await click(bot, plan)
    await api.wait_for(lambda: with_buttons(api, "Approval needed"), what="s5's approval")
    chat = [json.dumps(c.params) for c in api.calls]
    assert "[redacted]" in api.posted("On it")[0].text()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (BOT_TOKEN, SECRET, pasted):
        assert not [c for c in chat if secret in c], "a secret in a chat message"
    for secret in (BOT_TOKEN, SECRET):
        assert secret not in logged, "a secret in a log line"
