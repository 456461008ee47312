"""Hostile or broken requests to /slack/events get a clear status, never a 5xx or a traceback."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import bot.slack
from swarm.store.models import OutboxEvent
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import SECRET, Bot
from tests.fakes.slack_events import sign

JSON, FORM = "application/json", "application/x-www-form-urlencoded"


def trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records a broken request must not cause: errors, and anything with a traceback."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()]


async def post_raw(bot: Bot, body: bytes, content_type: str, *, signed: bool = True,
                   stamp: str | None = None, signature: str | None = None) -> int:
    """Post `body`, signed with the app's secret unless `signed` is False or `signature` says
    otherwise; `stamp` replaces the timestamp header."""
    stamp = stamp if stamp is not None else str(int(time.time()))
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp}
    if signed:
        headers["X-Slack-Signature"] = signature if signature is not None else \
            sign(SECRET, stamp, body)
    return (await bot.events.post_bytes(body, headers)).status


MALFORMED = [
    (b'{"type": "event_callback", "event": ', JSON),  # cut short
    (b"[1, 2, 3]", JSON),  # JSON, but no object
    (b'"just a string"', JSON),
    (b"payload=%7Bnot-json", FORM),  # a click whose payload is no JSON
    (b"payload=%5B%5D", FORM),  # payload=[]
    (b'{"type": "event_callback", "event": "app_mention"}', JSON),  # event not an object
    (b'{"type": "block_actions", "actions": []}', JSON),  # a click with no action
    (b'{"type": "event_callback", "team": 5, "event": {"type": "app_mention"}}', JSON),
]


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
async def test_a_malformed_body_signed_gets_400_and_unsigned_401_without_an_error_logged(
        bot: Bot, caplog: pytest.LogCaptureFixture, body: bytes, content_type: str) -> None:
    caplog.set_level(logging.INFO)
    assert await post_raw(bot, body, content_type) == 400
    assert await post_raw(bot, body, content_type, signature="v0=" + "0" * 64) == 401
    assert trouble(caplog) == []


async def test_a_body_that_is_not_utf8_gets_400_signed_or_not(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"type": "\xff\xfe"}'
    assert await post_raw(bot, body, JSON) == 400
    assert await post_raw(bot, body, JSON, signed=False) == 400
    assert trouble(caplog) == []


@pytest.mark.parametrize(("stamp", "signature"), [
    ("not-a-number", None), ("", None), ("١٧٠٠٠٠٠٠٠٠", None), ("12.5", None),
    (None, "v0=é" + "0" * 63), (None, ""), (None, "v0=" + "0" * 64),
])
async def test_a_bad_timestamp_or_signature_header_gets_401(
        bot: Bot, caplog: pytest.LogCaptureFixture, stamp: str | None,
        signature: str | None) -> None:
    body = json.dumps(bot.events.callback(bot.events.mention_event("hello"))).encode()
    status = await post_raw(bot, body, JSON, stamp=stamp,
                            signature=signature if signature is not None else "v0=" + "1" * 64)
    assert status == 401
    assert bot.runtime.swarm.objectives() == []
    assert trouble(caplog) == []


async def test_uninstalling_in_single_workspace_mode_is_answered_and_ends_the_token(
        bot: Bot, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    revoked, _ = await bot.events.event({"type": "tokens_revoked",
                                         "tokens": {"oauth": ["U0ALICE"], "bot": ["U0BOT"]}})
    uninstalled, _ = await bot.events.event({"type": "app_uninstalled"})
    assert (revoked.status, uninstalled.status) == (200, 200)  # a 404 would be retried
    posts = len(api.to("chat.postMessage"))
    delivery, _ = await bot.events.event(bot.events.mention_event("write the launch plan"))
    assert delivery.status == 200
    await api.wait_for(lambda: bot.runtime.swarm.objectives(), what="the objective (acked first)")
    await bot.runtime.settle()
    assert len(api.to("chat.postMessage")) == posts, "nothing is sent with a revoked token"
    with bot.runtime.db.read() as s:  # given up at once, not retried for hours
        rows = s.scalars(select(OutboxEvent)).all()
    assert rows and all(r.dead_at and r.attempts == 1 and r.last_error == "not_installed"
                        for r in rows)
    assert trouble(caplog) == []


def subscribed() -> list[str]:
    manifest = yaml.safe_load((Path(bot.slack.__file__).parent / "manifest.yml").read_text())
    return manifest["settings"]["event_subscriptions"]["bot_events"]


@pytest.mark.parametrize("subscription", subscribed())
async def test_no_subscribed_event_gets_a_404_which_slack_would_retry(
        bot: Bot, subscription: str) -> None:
    kind, _, channel_type = subscription.partition(".")  # message.channels: a message event
    event: dict[str, Any] = {"type": kind, "user": "U0ALICE", "channel": "C0GENERAL",
                             "ts": bot.events.next_ts(), "event_ts": bot.events.next_ts()}
    if channel_type:
        event["channel_type"] = channel_type.removesuffix("s")
    delivery, _ = await bot.events.event(event)
    assert delivery.status == 200


async def test_a_user_tokens_revocation_keeps_the_bot_token(bot: Bot, api: FakeSlackAPI) -> None:
    revoked, _ = await bot.events.event({"type": "tokens_revoked",
                                         "tokens": {"oauth": ["U0ALICE"], "bot": []}})
    assert revoked.status == 200
    await bot.events.event(bot.events.mention_event("write the launch plan"))
    await api.wait_for(lambda: api.posted("*Plan v1"), what="the plan")


async def test_ids_past_64_bits_name_no_objective_and_no_approval(
        bot: Bot, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    huge = "123456789012345678901234567890"
    status = await bot.events.command(f"status {huge}")
    assert status.status == 200 and f"no objective #{huge}" in status.json()["text"]
    click = await bot.events.click(f"approve:{huge}", huge, user="U0ALICE", channel="C0GENERAL",
                                   message_ts="1600000000.000001", thread_ts=None)
    assert click.status == 200
    told = await api.wait_for(lambda: api.to("chat.postEphemeral"), what="the refusal")
    assert told[-1].params["text"] == f"There is no approval #{huge}."
    assert trouble(caplog) == []


async def test_an_unknown_subcommand_is_not_echoed_with_its_secret(bot: Bot) -> None:
    reply = await bot.events.command("xoxb-1234567890-abcdefghijkl please")
    assert reply.status == 200
    assert "xoxb-1234567890-abcdefghijkl" not in reply.body and "I don't know" in reply.body


# -- property: whatever arrives, no 5xx and no traceback -------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
HEADER_TEXT = st.characters(blacklist_categories=("Cc", "Cs"))  # what a header can carry
EVENT_TYPES = st.sampled_from(["app_mention", "message", "reaction_added", "tokens_revoked",
                               "app_uninstalled", "agent_session_stopped", "other"])


def _mutated(template: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A payload Slack sends with some fields replaced by anything, some dropped."""
    def walk(value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                roll = data.draw(st.integers(0, 9))
                if roll == 0:
                    continue  # dropped
                out[key] = data.draw(JSON_VALUES) if roll == 1 else walk(item, depth + 1)
            return out
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        return value
    return walk(template, 0)


def _templates(bot: Bot, event_type: str) -> list[tuple[str, str]]:
    ev = bot.events
    events = {"app_mention": ev.mention_event("plan the launch"),
              "message": ev.message_event("an answer", thread_ts="1600000000.000001"),
              "reaction_added": ev.reaction_event("white_check_mark", user="U0ALICE",
                                                  channel="C0GENERAL", ts="1600000000.000001"),
              "tokens_revoked": {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": []}},
              "app_uninstalled": {"type": "app_uninstalled"},
              "agent_session_stopped": {"type": "agent_session_stopped", "user": "U0ALICE",
                                        "channel": "C0GENERAL", "thread_ts": "1.2",
                                        "event_ts": "1.3", "streaming_message_ts": []},
              "other": {"type": "channel_created"}}
    click = {"type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T0TEAM"},
             "channel": {"id": "C0GENERAL"}, "message": {"ts": "1.2", "thread_ts": "1.2"},
             "actions": [{"action_id": "approve:1", "value": "1", "type": "button"}]}
    return [(json.dumps(ev.callback(events[event_type])), JSON),
            (urlencode({"payload": json.dumps(click)}), FORM)]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["text", "near-slack"]), event_type=EVENT_TYPES,
       signed=st.booleans(), stamp=st.none() | st.text(HEADER_TEXT, max_size=12),
       content_type=st.sampled_from([JSON, FORM, "text/plain", ""]))
async def test_no_body_or_header_gets_a_5xx_or_a_traceback(
        bot: Bot, caplog: pytest.LogCaptureFixture, data: st.DataObject, kind: str,
        event_type: str, signed: bool, stamp: str | None, content_type: str) -> None:
    caplog.clear()  # one bot serves every example: each is judged on its own records
    if kind == "text":
        body = data.draw(st.text(max_size=200) | st.binary(max_size=200).map(
            lambda b: b.decode("latin-1")))
    else:
        template, content_type = data.draw(st.sampled_from(_templates(bot, event_type)))
        parsed = json.loads(template) if content_type == JSON else \
            json.loads(dict(parse_qsl(template))["payload"])
        mutated = _mutated(parsed, data)
        body = json.dumps(mutated) if content_type == JSON else \
            urlencode({"payload": json.dumps(mutated)})
    now = str(int(time.time()))
    status = await post_raw(bot, body.encode("utf-8", "surrogatepass"), content_type,
                            signed=signed, stamp=now if stamp is None else stamp)
    assert status < 500
    await bot.runtime.settle()
    assert trouble(caplog) == []
