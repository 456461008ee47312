"""Slack: the plan's picture is uploaded into the objective's thread, also after a restart."""
from __future__ import annotations

from typing import Any

from bot import picture
from bot.runtime import Runtime
from tests.conftest import make_settings
from tests.fakes.slack_api import Call, FakeSlackAPI
from tests.fakes.slack_bot import Bot, start_bot
from tests.pictures import states_drawn
from tests.test_slack import CHANNEL, approve_step_and_finish, click, mention, objective_id


def in_thread(api: FakeSlackAPI, thread_ts: str) -> list[tuple[Call, Call, bytes]]:
    return [f for f in api.files() if f[1].params.get("thread_ts") == thread_ts]


async def test_the_plan_is_pictured_when_proposed_and_again_with_its_outcome(
        bot: Bot, api: FakeSlackAPI) -> None:
    plan, thread_ts = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    proposed = await api.wait_for(lambda: in_thread(api, thread_ts), what="the plan's picture")
    asked, completed, png = proposed[0]
    assert completed.params["channel_id"] == CHANNEL
    assert completed.at > plan.at, "the picture follows the plan's text"
    assert asked.params["filename"] == f"objective-{oid}-plan.png"
    assert int(asked.params["length"]) == len(png) and png.startswith(b"\x89PNG")
    view = bot.runtime.swarm.view(oid)
    assert view is not None
    for st in view.steps:  # alt text for screen readers: every step, pending
        assert f"{st.key} ({st.role}) {st.title}: pending" in asked.params["alt_txt"]
    pending = picture.fill_of("pending")
    assert set(states_drawn(png, picture.from_view(view)).values()) \
        == {pending}

    await click(bot, plan)
    await approve_step_and_finish(bot, api, oid)
    ended = await api.wait_for(lambda: in_thread(api, thread_ts)[1:], what="the end picture")
    asked, completed, png = ended[0]
    results = api.posted(f"Objective #{oid} finished")[0]
    assert completed.at > results.at, "the outcome's picture follows its text"
    view = bot.runtime.swarm.view(oid)
    assert view is not None and view.state == "finished"
    drawn = states_drawn(png, picture.from_view(view))
    assert drawn == {st.key: picture.fill_of("finished") for st in view.steps}
    assert "finished" in asked.params["alt_txt"] and "pending" not in asked.params["alt_txt"]
    assert len(api.files()) == 2, "each picture once"


async def test_a_picture_asked_for_while_no_bot_runs_is_posted_by_the_next_process(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    first = await start_bot(tmp_path, sqlite_url, api)
    plan, thread_ts = await mention(first, api, "launch our SaaS in Japan")
    oid = objective_id(first)
    await api.wait_for(lambda: in_thread(api, thread_ts), what="the plan's picture")
    await click(first, plan)
    await api.wait_for(lambda: api.posted("Approval needed"), what="the step approval")
    await first.close()

    # `/swarm status --picture` answered by a process that delivers nothing (a `resume`, say)
    other = Runtime(make_settings(tmp_path, sqlite_url), migrate=True)
    asked = await other.swarm.request_picture(oid, "U0ALICE")
    await other.close()
    assert asked.ok and "on its way" in asked.message
    assert len(in_thread(api, thread_ts)) == 1

    second = await start_bot(tmp_path, sqlite_url, api)  # a new process on the same database
    try:
        pictured = await api.wait_for(lambda: in_thread(api, thread_ts)[1:],
                                      what="the picture asked for")
        call, completed, png = pictured[0]
        assert completed.params["channel_id"] == CHANNEL
        assert "waiting for a human" in call.params["alt_txt"]  # the step awaiting approval
        view = second.runtime.swarm.view(oid)
        assert view is not None
        drawn = states_drawn(png, picture.from_view(view))
        assert {st.key: drawn[st.key] for st in view.steps} == \
            {st.key: picture.fill_of(st.state) for st in view.steps}
        assert picture.fill_of("finished") in drawn.values()

        reply = (await second.events.command(f"status {oid} --picture")).json()["text"]
        assert "on its way to its thread" in reply
        await api.wait_for(lambda: in_thread(api, thread_ts)[2:], what="the second picture")
        assert "no plan to draw" not in reply
        missing = (await second.events.command("status --picture")).json()["text"]
        assert "Give an objective's number" in missing
    finally:
        await second.close()
    assert len(in_thread(api, thread_ts)) == 3, "each request pictured once"


async def test_a_picture_slack_refuses_loses_no_text_and_holds_back_nothing(
        bot: Bot, api: FakeSlackAPI) -> None:
    api.refuse("files.completeUploadExternal", "file_uploads_disabled")
    plan, thread_ts = await mention(bot, api, "launch our SaaS in Japan")
    oid = objective_id(bot)
    await click(bot, plan)
    await approve_step_and_finish(bot, api, oid)
    assert api.files() == []
    assert not api.posted("could not be posted"), "the text all came; nothing to apologise for"
