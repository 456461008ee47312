"""Discord user stories end to end: the real discord.py client against a local Discord."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot import picture
from swarm.store.models import OutboxEvent, ThreadRef
from tests.fakes.discord_bot import DiscordBot, start_discord_bot
from tests.fakes.discord_server import (
    ADMIN,
    ALICE,
    CHANNEL_ID,
    GUILD_ID,
    MALLORY,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    Call,
    FakeDiscord,
)
from tests.pictures import states_drawn


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


@pytest.fixture
async def bot(tmp_path: Any, sqlite_url: str, fake: FakeDiscord) -> AsyncIterator[DiscordBot]:
    running = await start_discord_bot(tmp_path, sqlite_url, fake)
    yield running
    await running.close()


def with_buttons(fake: FakeDiscord, needle: str) -> list[Call]:
    return [c for c in fake.posted(needle) if c.custom_ids]


async def mention(fake: FakeDiscord, goal: str) -> tuple[Call, dict[str, Any]]:
    """Mention the bot in #general; return the plan message (with its buttons) and the mention."""
    event = await fake.mention(goal)
    plan = await fake.wait_for(lambda: with_buttons(fake, "Plan v1"), what="the plan")
    return plan[-1], event


def objective_id(bot: DiscordBot) -> int:
    views = bot.runtime.swarm.objectives()
    assert len(views) == 1
    return views[0].id


async def click(fake: FakeDiscord, message: Call, verb: str = "approve", user: str = ALICE,
                permissions: int = MEMBER_PERMISSIONS) -> str:
    """Click the message's button; return what the clicker was told (ephemerally)."""
    custom_id = next(c for c in message.custom_ids if c.startswith(verb + ":"))
    token = await fake.click(message.answer["id"], custom_id, user=user,
                             permissions=permissions, as_shown=message.answer)
    answers = await fake.wait_for(lambda: [c for c in fake.answers(token)
                                           if c.path.startswith("/webhooks/")],
                                  what="the followup")
    deferred = [c for c in fake.answers(token) if c.path.startswith("/interactions/")]
    assert deferred and deferred[0].at - answers[0].at <= 0, "deferred before the answer"
    assert fake.first_answer_s(token) < 3.0, "deferred within Discord's 3 s"
    assert answers[0].body["flags"] & 64, "only the clicker sees the answer"
    return str(answers[0].body["content"])


async def approve_step_and_finish(fake: FakeDiscord, oid: int) -> None:
    step = await fake.wait_for(lambda: with_buttons(fake, "Approval needed"),
                               what="the step approval")
    await click(fake, step[-1])
    await fake.wait_for(lambda: fake.posted(f"Objective #{oid} finished"), what="the results")


async def test_a_mention_opens_a_thread_with_the_plan_and_its_buttons(
        tmp_path: Any, db_url: str, fake: FakeDiscord) -> None:
    bot = await start_discord_bot(tmp_path, db_url, fake)
    try:
        plan, event = await mention(fake, "launch our SaaS in Japan")
        oid = objective_id(bot)
        thread = fake.to("POST /channels/{channel_id}/messages/{message_id}/threads")
        assert len(thread) == 1 and thread[0].path.endswith(f"/{event['id']}/threads")
        assert thread[0].body["name"] == "launch our SaaS in Japan"
        accepted = fake.posted("On it")
        assert accepted[0].path == f"/channels/{event['id']}/messages", "posted in the thread"
        assert plan.path == accepted[0].path
        approval_id = bot.runtime.swarm.pending_approvals(oid)[0].id
        assert plan.custom_ids == [f"approve:{approval_id}", f"reject:{approval_id}"]
        assert "Research the context" in plan.text() and "s5" in plan.text()
        view = bot.runtime.swarm.view(oid)
        assert view is not None and view.requester == ALICE
        assert view.thread == ThreadRef("discord", GUILD_ID, event["id"], event["id"])
        seen = fake.to("PUT /channels/{c}/messages/{m}/reactions/{e}/{me}")
        assert seen and seen[0].path.startswith(f"/channels/{CHANNEL_ID}/messages/{event['id']}")
    finally:
        await bot.close()


async def test_a_click_is_answered_privately_and_a_second_click_says_it_is_decided(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    plan, _ = await mention(fake, "launch our SaaS in Japan")
    oid = objective_id(bot)
    told = await click(fake, plan)
    assert "approved" in told.lower()
    decided = await fake.wait_for(lambda: fake.edits_of(plan.answer["id"]), what="the edit")
    embed = decided[-1].body["embeds"][0]
    assert f"Approved by <@{ALICE}> <t:" in embed["description"], "who, and when"
    assert "Research the context" in embed["description"], "the plan stays readable"
    again = await click(fake, plan)  # a click racing the edit, on the decided approval
    assert "already" in again.lower()
    await approve_step_and_finish(fake, oid)
    [progress] = fake.posted("steps done")  # as last shown: posted, or edited since
    embed = [progress, *fake.edits_of(progress.answer["id"])][-1].body["embeds"][0]
    assert "researcher" in embed["description"] and "tokens" in embed["footer"]["text"]


async def test_the_swarm_app_command_answers_through_the_shared_handler(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    helped = await fake.command("help")
    answer = await fake.wait_for(lambda: fake.answers(helped), what="the help")
    data = answer[0].body["data"]
    assert answer[0].body["type"] == 4 and data["flags"] & 64
    assert fake.first_answer_s(helped) < 3.0, "answered within Discord's 3 s"
    assert "status [ID]" in data["content"]
    _, _ = await mention(fake, "launch our SaaS in Japan")
    oid = objective_id(bot)
    listed = await fake.command("list")
    text = (await fake.wait_for(lambda: fake.answers(listed)))[0].body["data"]["content"]
    assert f"#{oid} awaiting_approval" in text
    refused = await fake.command(f"cancel {oid}", user=MALLORY)
    text = (await fake.wait_for(lambda: fake.answers(refused)))[0].body["data"]["content"]
    assert "Only the requester" in text
    assert bot.runtime.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    cancelled = await fake.command(f"cancel {oid}")
    answer = (await fake.wait_for(lambda: fake.answers(cancelled)))[0].body
    assert answer["data"]["content"] == f"Objective #{oid} cancelled."
    assert not answer["data"].get("flags", 0) & 64, "a cancel is told to the channel"
    await fake.wait_for(lambda: fake.posted(f"Objective #{oid} cancelled"), what="the notice")


async def test_healthz_reports_the_gateway(bot: DiscordBot, fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bot.url}/healthz") as resp:
            body = await resp.json()
            assert resp.status == 200
    assert body["discord"]["ok"] is True and body["discord"]["gateway"] == "connected"
    await fake.drop(code=4014)  # disallowed intents: discord.py gives up, as it should
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with session.get(f"{bot.url}/healthz") as resp:
                if resp.status == 503:
                    body = await resp.json()
                    break
            await asyncio.sleep(0.05)
    assert body["discord"]["gateway"] == "disconnected" and body["ok"] is False


def outbox(bot: DiscordBot) -> list[OutboxEvent]:
    with bot.runtime.db.read() as s:
        return list(s.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


async def test_a_progress_edit_rate_limited_past_the_clients_patience_holds_nothing_up(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    plan, _ = await mention(fake, "launch our SaaS in Japan")
    oid = objective_id(bot)
    await click(fake, plan)
    await fake.wait_for(lambda: fake.posted("steps done"), what="the progress message")
    progress_id = fake.posted("steps done")[0].answer["id"]
    fake.rate_limit(f"PATCH /channels/{{channel_id}}/messages/{progress_id}", times=1,
                    retry_after=45.0)
    limited_at = time.monotonic()
    await approve_step_and_finish(fake, oid)
    assert time.monotonic() - limited_at < 30, "nobody slept the 45 s out"
    await fake.wait_for(lambda: all(r.delivered_at for r in outbox(bot)), what="all delivered")
    assert not [r for r in outbox(bot) if r.dead_at], "nothing lost"
    limited = [c for c in fake.calls if c.status == 429]
    assert len(limited) == 1 and limited[0].path.endswith(f"/{progress_id}")


async def test_a_dropped_gateway_resumes_and_a_replayed_mention_starts_nothing_twice(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    fake.replay_last_on_resume = True
    await mention(fake, "launch our SaaS in Japan")
    await fake.drop(code=4000)
    await fake.wait_for(lambda: fake.resumes == 1, what="a RESUME")
    await bot.runtime.settle()
    assert fake.identifies == 1
    assert len(bot.runtime.swarm.objectives()) == 1


async def test_an_admin_cancels_anothers_objective(bot: DiscordBot, fake: FakeDiscord) -> None:
    await mention(fake, "launch our SaaS in Japan")
    oid = objective_id(bot)
    done = await fake.command(f"cancel {oid}", user=ADMIN,
                              permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    text = (await fake.wait_for(lambda: fake.answers(done)))[0].body["data"]["content"]
    assert text == f"Objective #{oid} cancelled."



async def test_discord_sync_registers_the_swarm_command_in_one_guild(fake: FakeDiscord) -> None:
    from bot.discord.settings import DiscordSettings
    from bot.discord.sync import sync_commands
    from tests.fakes.discord_server import BOT_ID, TOKEN

    names = await sync_commands(DiscordSettings(token=TOKEN, api_url=fake.api_url),
                                int(GUILD_ID))
    assert names == ["swarm"]
    put = fake.to(f"PUT /applications/{BOT_ID}/guilds/{GUILD_ID}/commands")
    assert len(put) == 1 and put[0].body["_list"][0]["options"][0]["name"] == "command"
    assert not fake.to("GET /gateway/bot"), "a sync needs no gateway"


async def test_very_long_results_are_attached_as_one_markdown_file(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    from swarm.events import ObjectiveFinished, StepResult

    await mention(fake, "launch our SaaS in Japan")
    oid = objective_id(bot)
    view = bot.runtime.swarm.view(oid)
    assert view is not None
    event = ObjectiveFinished(oid, "finished", "All done.", [
        StepResult("Write it up", "writer", "finished", "w" * 30_000)])
    await bot.edge.adapter.deliver(event, view.thread, "outbox:1")
    await bot.edge.adapter.deliver(event, view.thread, "outbox:1")  # redelivered
    posted = fake.posted(f"Objective #{oid} finished")
    assert len(posted) == 1 and len(posted[0].body["content"]) <= 2000
    (name, data), = posted[0].files
    assert name == f"objective-{oid}-results.md" and b"w" * 30_000 in data


async def test_secrets_never_reach_a_discord_message_or_a_log_line(
        bot: DiscordBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    from tests.fakes.discord_server import TOKEN

    caplog.set_level(logging.DEBUG)  # everything an operator's DEBUG would show
    for name in ("bot", "swarm"):
        caplog.set_level(logging.DEBUG, logger=name)
    pasted = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"
    await mention(fake, f"rotate the bot token {pasted} and ship")
    chat = [json.dumps(c.body) for c in fake.calls]
    assert "[redacted]" in fake.posted("On it")[0].text()
    assert not [c for c in chat if pasted in c or TOKEN in c], "a secret in a chat message"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and pasted not in logged, "a secret in a log line"


async def test_discord_gateway_url_overrides_the_one_the_rest_api_names(
        tmp_path: Any, sqlite_url: str, fake: FakeDiscord) -> None:
    bot = await start_discord_bot(tmp_path, sqlite_url, fake,
                                  gateway_url=fake.gateway_url + "?via=override")
    try:
        assert not fake.to("GET /gateway/bot"), "not asked: the setting names it"
        assert fake.identifies == 1
        await mention(fake, "launch our SaaS in Japan")
    finally:
        await bot.close()


async def test_the_plans_picture_is_attached_after_the_plan_with_its_alt_text(
        bot: DiscordBot, fake: FakeDiscord) -> None:
    plan, event = await mention(fake, "launch our SaaS in Japan")
    pictures = await fake.wait_for(lambda: [c for c in fake.to("POST /channels/{c}/messages")
                                            if c.files], what="the picture")
    (name, png), = pictures[0].files
    assert name.endswith(".png") and png.startswith(b"\x89PNG")
    assert pictures[0].path == f"/channels/{event['id']}/messages", "in the thread"
    assert pictures[0].at >= plan.at, "after the plan's text"
    described = pictures[0].body["attachments"][0]["description"]
    assert "launch our SaaS in Japan" in described


def pictures_in(fake: FakeDiscord, thread_id: str) -> list[Call]:
    """The pictures Discord accepted into the thread."""
    return [c for c in fake.to("POST /channels/{c}/messages")
            if c.files and c.path == f"/channels/{thread_id}/messages"]


async def test_a_picture_owed_when_the_bot_stops_is_attached_once_by_the_next_process(
        tmp_path: Any, sqlite_url: str, fake: FakeDiscord) -> None:
    fake.uploads_refused = (503, 0)  # Discord has a hiccup: the plan's text goes, not its picture
    first = await start_discord_bot(tmp_path, sqlite_url, fake)
    try:
        plan, event = await mention(fake, "launch our SaaS in Japan")
        thread_id, oid = event["id"], objective_id(first)
        await fake.wait_for(lambda: [r for r in outbox(first) if r.kind == "PlanProposed"
                                     and r.attempts and r.delivered_at is None],
                            what="the plan's delivery failing on its picture")
    finally:
        await first.close()  # the process stops with the picture still owed
    [owed] = [r for r in outbox(first) if r.kind == "PlanProposed"]
    assert owed.delivered_at is None and owed.dead_at is None and "503" in str(owed.last_error)
    assert [c for c in fake.calls if c.files and c.status == 503], "it was tried"
    assert not pictures_in(fake, thread_id)
    fake.uploads_refused = None

    second = await start_discord_bot(tmp_path, sqlite_url, fake)  # same database, same Discord
    try:
        [proposed] = await fake.wait_for(lambda: pictures_in(fake, thread_id),
                                         what="the owed picture")
        assert len(with_buttons(fake, "Plan v1")) == 1, "the plan's text is not posted again"
        assert proposed.at > plan.at
        (name, png), = proposed.files
        assert name == f"objective-{oid}-plan.png"
        described = proposed.body["attachments"][0]["description"]
        assert described.startswith(f"Objective #{oid} · plan v1 proposed: launch our SaaS")
        view = second.runtime.swarm.view(oid)
        assert view is not None
        for st in view.steps:  # alt text, and each box in the colour of its state
            assert f"{st.key} ({st.role}) {st.title}: pending" in described
        assert set(states_drawn(png, picture.from_view(view)).values()) \
            == {picture.fill_of("pending")}

        await click(fake, plan)  # the first process's buttons still work
        await approve_step_and_finish(fake, oid)
        await fake.wait_for(lambda: pictures_in(fake, thread_id)[1:], what="the end's picture")
        token = await fake.command(f"status {oid} --picture")  # asked in #general
        told = await fake.wait_for(lambda: fake.answers(token), what="the command's answer")
        assert "on its way to its thread" in json.dumps(told[-1].body)
        await fake.wait_for(lambda: pictures_in(fake, thread_id)[2:], what="the one asked for")
        await fake.wait_for(lambda: all(r.delivered_at for r in outbox(second)),
                            what="all delivered")
        ended = second.runtime.swarm.view(oid)
        assert ended is not None and ended.state == "finished"
        for asked in pictures_in(fake, thread_id)[1:]:
            drawn = states_drawn(asked.files[0][1], picture.from_view(ended))
            assert drawn == {st.key: picture.fill_of("finished") for st in ended.steps}
    finally:
        await second.close()
    assert len(pictures_in(fake, thread_id)) == 3, "each picture once, all in the thread"
    assert not [c for c in fake.to("POST /channels/{c}/messages") if c.files
                and c.path != f"/channels/{thread_id}/messages"], "none outside the thread"
