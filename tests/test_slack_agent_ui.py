"""Slack's agent UI: the plan as task cards updated in place, and where a workspace lacks it."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.fakes.slack_api import Call, FakeSlackAPI
from tests.fakes.slack_bot import BOT_TOKEN, Bot
from tests.test_slack import (
    ALICE,
    CHANNEL,
    MALLORY,
    approve_step_and_finish,
    click,
    mention,
    objective_id,
    with_buttons,
)

GOAL = "launch our SaaS in Japan [latency:120]"
RANK = {"pending": 0, "in_progress": 1, "complete": 2}
PLAN_NEEDLE = '"type": "plan"'  # how a plan block reads in a call's JSON


def plan_block(call: Call) -> dict[str, Any] | None:
    return next((b for b in call.params.get("blocks", []) if b["type"] == "plan"), None)


def statuses(call: Call) -> dict[str, str]:
    block = plan_block(call)
    assert block is not None
    return {task["task_id"]: task["status"] for task in block["tasks"]}


def progress_message(api: FakeSlackAPI) -> tuple[Call, list[Call]]:
    """The progress message as posted, and its edits (whatever blocks they carry)."""
    posted = api.posted("steps done")
    assert len(posted) == 1, "one progress message per objective"
    ts = posted[0].answer["ts"]
    return posted[0], [c for c in api.to("chat.update") if c.params["ts"] == ts]


async def run_to_the_end(bot: Bot, api: FakeSlackAPI) -> int:
    # [latency:120]: each model call takes 120 ms, so steps are seen running
    plan, _ = await mention(bot, api, GOAL)
    oid = objective_id(bot)
    await click(bot, plan)
    await approve_step_and_finish(bot, api, oid)
    await api.wait_for(lambda: (edits := progress_message(api)[1])
                       and "5/5 steps done" in edits[-1].text(), what="the final progress edit")
    return oid


async def test_the_plan_shows_as_task_cards_that_move_from_pending_to_complete_in_place(
        bot: Bot, api: FakeSlackAPI) -> None:
    oid = await run_to_the_end(bot, api)
    view = bot.runtime.swarm.view(oid)
    assert view is not None
    posted, edits = progress_message(api)
    seen = [statuses(c) for c in [posted, *edits]]
    keys = [st.key for st in view.steps]
    assert all(list(cards) == keys for cards in seen), "one card per step, in the plan's order"
    assert any("in_progress" in cards.values() for cards in seen), "steps are seen running"
    assert seen[-1] == dict.fromkeys(keys, "complete")
    for key in keys:  # a card only moves forward: pending, in progress, complete
        ranks = [RANK[cards[key]] for cards in seen]
        assert ranks == sorted(ranks), f"{key} went {[cards[key] for cards in seen]}"
    final = plan_block(edits[-1])
    assert final is not None and f"Objective #{oid}" in final["title"]
    first = final["tasks"][0]
    assert view.steps[0].role in str(first["details"])
    assert view.steps[0].output and view.steps[0].output.split()[0] in str(first["output"])
    assert "tokens" in edits[-1].text() and "$" in edits[-1].text(), "the spend line stays"


async def test_a_workspace_whose_slack_refuses_the_plan_block_gets_sections_learnt_once(
        bot: Bot, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for method in ("chat.postMessage", "chat.update"):
        api.refuse(method, "invalid_blocks", needle=PLAN_NEEDLE)
    await run_to_the_end(bot, api)
    refused = [c for c in api.calls if c.answer.get("error") == "invalid_blocks"]
    assert len(refused) == 1, "the workspace is asked once, then remembered"
    posted, edits = progress_message(api)
    assert plan_block(posted) is None and all(plan_block(c) is None for c in edits)
    assert ":white_check_mark: `s1`" in edits[-1].text(), "today's checklist of sections"
    assert not api.posted("could not be posted"), "nothing was lost"
    assert sum("feature_unavailable" in r.getMessage() for r in caplog.records) == 1


def sessions(api: FakeSlackAPI, thread_ts: str) -> list[str]:
    """The statuses the thread's agent session was given, in order."""
    calls = api.to("agents.sessions.setStatus")
    assert all(c.params["channel_id"] == CHANNEL for c in calls)
    return [c.params["status"] for c in calls if c.params.get("thread_ts") == thread_ts]


async def test_the_session_processes_while_steps_run_is_suspended_while_waiting_then_closed(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, ts = await mention(bot, api, GOAL)
    oid = objective_id(bot)
    await bot.runtime.settle()
    assert sessions(api, ts)[-1] == "suspended", "the plan waits for its approval"
    assert api.to("agents.sessions.setStatus")[0].token == BOT_TOKEN
    first = api.to("agents.sessions.setStatus")[0].params
    assert "launch our SaaS in Japan" in first["title"] and first["initiator_user_id"] == ALICE
    await click(bot, plan)
    step = await api.wait_for(lambda: with_buttons(api, "Approval needed"), what="s5's approval")
    await bot.runtime.settle()
    seen = sessions(api, ts)
    assert seen[-2:] == ["processing", "suspended"], "steps ran; now s5 waits for approval"
    await click(bot, step[-1])
    await api.wait_for(lambda: api.posted(f"Objective #{oid} finished"), what="the results")
    await bot.runtime.settle()
    seen = sessions(api, ts)
    assert seen[-2:] == ["processing", "closed"]
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False)), "sent only when it changes"


async def test_an_app_not_declared_as_an_agent_runs_as_before_asking_slack_once(
        bot: Bot, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    api.refuse("agents.sessions.setStatus", "not_authorized")
    oid = await run_to_the_end(bot, api)
    assert len([c for c in api.calls if c.method == "agents.sessions.setStatus"]) == 1
    assert api.posted(f"Objective #{oid} finished") and not api.posted("could not be posted")
    assert sum("feature_unavailable" in r.getMessage() for r in caplog.records) == 1


async def stop(bot: Bot, user: str, thread_ts: str) -> None:
    """A click on Slack's Stop button of the thread's agent session."""
    delivery, _ = await bot.events.event({
        "type": "agent_session_stopped", "user": user, "channel": CHANNEL,
        "thread_ts": thread_ts, "event_ts": bot.events.next_ts(), "streaming_message_ts": []})
    assert delivery.status == 200


async def test_stop_from_the_requester_cancels_and_from_a_stranger_is_refused(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, ts = await mention(bot, api, GOAL)
    oid = objective_id(bot)
    await click(bot, plan)
    await api.wait_for(lambda: sessions(api, ts)[-1:] == ["processing"], what="steps running")
    await stop(bot, MALLORY, ts)
    refusal = await api.wait_for(lambda: [c for c in api.to("chat.postEphemeral")
                                          if c.params["user"] == MALLORY], what="the refusal")
    assert refusal[0].params["thread_ts"] == ts
    view = bot.runtime.swarm.view(oid)
    assert view is not None and view.state == "running", "a stranger's Stop changes nothing"

    await stop(bot, ALICE, ts)
    await api.wait_for(lambda: (v := bot.runtime.swarm.view(oid)) and v.state == "cancelled",
                       what="the cancel")
    await bot.runtime.settle()
    assert sessions(api, ts)[-1] == "closed"
    assert api.posted(f"Cancelled by {ALICE}"), "the thread is told who stopped it"


async def test_stop_from_a_workspace_admin_cancels_someone_elses_objective(
        bot: Bot, api: FakeSlackAPI) -> None:
    api.workspace_admins.add("U0BOSS")  # users.info says so: the policy lets an admin stop it
    plan, ts = await mention(bot, api, GOAL)
    oid = objective_id(bot)
    await click(bot, plan)
    await api.wait_for(lambda: sessions(api, ts)[-1:] == ["processing"], what="steps running")
    await stop(bot, "U0BOSS", ts)
    await api.wait_for(lambda: (v := bot.runtime.swarm.view(oid)) and v.state == "cancelled",
                       what="the admin's cancel")
    await api.wait_for(lambda: api.posted("Cancelled by U0BOSS"), what="who stopped it")
