"""Slack rendering: text both ways, Slack's size limits, and long results (split or a file)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from bot.runtime import Runtime
from bot.slack import render
from bot.slack.adapter import SlackAdapter
from bot.slack.app import SlackEdge
from bot.slack.settings import SlackSettings
from bot.slack.text import from_slack, mrkdwn, split
from swarm.events import ApprovalDecided, ObjectiveFinished, StepResult
from swarm.store.models import ThreadRef
from tests.conftest import make_settings
from tests.fakes.slack_api import FakeSlackAPI

THREAD = ThreadRef("slack", "T0TEAM", "C0GENERAL", "1600000001.000001")


def test_slack_markup_becomes_plain_text_without_the_bots_mention() -> None:
    text = ("<@U0BOT> launch <https://acme.io|our site> in <#C0JP|japan> with <@U0BOB> "
            "&amp; keep costs &lt; 5k")
    assert from_slack(text, drop_user="U0BOT") == \
        "launch our site (https://acme.io) in #japan with @U0BOB & keep costs < 5k"


def test_markdown_becomes_mrkdwn_and_markup_is_escaped() -> None:
    assert mrkdwn("## Plan\n**Budget** < 5k & <@U1>") == \
        "*Plan*\n*Budget* &lt; 5k &amp; &lt;@U1&gt;"


def test_split_keeps_every_character_within_the_limit() -> None:
    text = "\n".join(f"line {i} " + "x" * (i * 37 % 500) for i in range(300)) + "\n" + "y" * 7000
    pieces = split(text, 3000)
    assert all(len(p) <= 3000 for p in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


def test_split_does_not_cut_an_escaped_character_in_two() -> None:
    pieces = split("a" * 2998 + "&amp;" + "b" * 10, 3000)
    assert pieces[0] == "a" * 2998 and pieces[1].startswith("&amp;")


def finished(outputs: list[str]) -> ObjectiveFinished:
    return ObjectiveFinished(7, "finished", "5 of 5 steps finished.",
                             [StepResult(f"Step {i}", "writer", "finished", out)
                              for i, out in enumerate(outputs)], 1234, 0.0042)


def test_long_results_are_split_within_slacks_limits() -> None:
    event = finished(["## Part\n" + "\n".join(f"- point {i} " + "z" * 90 for i in range(400))
                      for _ in range(3)])
    messages = render.results(event)
    assert len(messages) > 1
    for m in messages:
        assert len(m.blocks) <= render.MESSAGE_BLOCKS <= 50
        assert all(len(b["text"]["text"]) <= render.SECTION_CHARS for b in m.blocks)
        assert sum(len(b["text"]["text"]) for b in m.blocks) <= render.MESSAGE_CHARS
    shown = "\n".join(b["text"]["text"] for m in messages for b in m.blocks)
    assert shown.count("- point 399") == 3 and "Objective #7 finished" in messages[0].blocks[0][
        "text"]["text"]


def test_a_decision_shows_who_and_when() -> None:
    msg = render.decided(ApprovalDecided(7, 3, "step", "Run step 'Ship'", True, "U0ALICE", None,
                                         "2025-01-02T03:04:05"), None)
    line = msg.blocks[-1]["elements"][0]["text"]
    assert "Approved by <@U0ALICE>" in line and "<!date^1735787045^" in line
    assert not any(b["type"] == "actions" for b in msg.blocks)


@pytest.fixture
async def adapter(tmp_path: Any, sqlite_url: str) -> AsyncIterator[tuple[SlackAdapter,
                                                                         FakeSlackAPI]]:
    api = await FakeSlackAPI().start()
    runtime = Runtime(make_settings(tmp_path, sqlite_url), migrate=True)
    edge = SlackEdge(runtime, SlackSettings(bot_token=SecretStr("xoxb-1-render-test-token"),
                                            api_url=api.base_url))
    yield edge.adapter, api
    await edge.close()
    await runtime.close()
    await api.close()


async def test_long_results_go_out_as_several_messages_once(
        adapter: tuple[SlackAdapter, FakeSlackAPI]) -> None:
    slack, api = adapter
    event = finished(["x" * 9000, "y" * 9000])
    await slack.deliver(event, THREAD, "outbox:1")
    await slack.deliver(event, THREAD, "outbox:1")  # redelivered: nothing goes out twice
    posts = api.to("chat.postMessage")
    assert len(posts) == len(render.results(event)) >= 2
    assert all(p.params["thread_ts"] == THREAD.thread_id for p in posts)


async def test_very_long_results_are_uploaded_as_one_file(
        adapter: tuple[SlackAdapter, FakeSlackAPI]) -> None:
    slack, api = adapter
    event = finished(["w" * 30_000, "v" * 30_000])
    await slack.deliver(event, THREAD, "outbox:1")
    await slack.deliver(event, THREAD, "outbox:1")
    assert [c.method for c in api.calls] == ["files.getUploadURLExternal", "upload",
                                             "files.completeUploadExternal"]
    assert api.calls[1].params["bytes"] > 60_000
    done = api.calls[2].params
    assert done["channel_id"] == THREAD.channel_id and done["thread_ts"] == THREAD.thread_id
    assert "Objective #7 finished" in done["initial_comment"]
