"""Slack: rejecting a plan opens a modal that asks why; its reason makes the manager replan,
and the first plan's buttons no longer decide anything."""
from __future__ import annotations

from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import Bot
from tests.test_slack import ALICE, click, mention, objective_id, with_buttons

REASON = "Drop the rollout step, we deploy by hand"


async def test_a_reject_click_asks_why_and_the_reason_gets_a_new_plan(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, _ = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    await click(bot, plan, "reject")
    [opened] = await api.wait_for(lambda: api.to("views.open"), what="the reason modal")
    assert bot.runtime.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    view = opened.answer["view"]
    submitted = await bot.events.submit_view(
        view, {"reason": {"reason_text": {"type": "plain_text_input", "value": REASON}}},
        user=ALICE)
    assert submitted.status == 200
    v2 = await api.wait_for(lambda: with_buttons(api, "*Plan v2"), what="the new plan")
    assert REASON in v2[-1].text()  # its rationale answers the feedback
    assert api.posted("Replanning with that feedback")
    await click(bot, plan, "approve")  # the first plan's button, clicked late
    stale = await api.wait_for(lambda: [c for c in api.to("chat.postEphemeral")
                                        if "replaced by plan v2" in c.text()],
                               what="the stale click's answer")
    assert stale[0].params["user"] == ALICE
    assert bot.runtime.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]


async def test_a_workspace_admin_may_decide_and_slack_is_asked_once_a_minute(
        bot: Bot, api: FakeSlackAPI) -> None:
    api.workspace_admins.add("U0BOSS")
    plan, _ = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    await click(bot, plan, "approve", user="U0MALLORY")
    await api.wait_for(lambda: api.to("chat.postEphemeral"), what="the refusal")
    assert bot.runtime.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    await click(bot, plan, "approve", user="U0BOSS")
    await api.wait_for(lambda: bot.runtime.swarm.view(oid).state == "running",  # type: ignore[union-attr]
                       what="the admin's approval")
    assert "budget" in (await bot.events.command("help", user="U0BOSS")).json()["text"]
    asked = [c.params["user"] for c in api.to("users.info")]
    assert sorted(asked) == ["U0BOSS", "U0MALLORY"]  # cached: the command asked no more
