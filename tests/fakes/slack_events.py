"""Slack's side of the Events API: signed deliveries (events, clicks, slash commands) to the bot."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.fakes.slack_api import API_APP_ID, BOT_USER_ID, TEAM_ID


def sign(secret: str, timestamp: str, body: str | bytes) -> str:
    """The v0 signature Slack puts in X-Slack-Signature."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    status: int
    body: str
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)


class SlackEvents:
    """Posts to the bot's /slack/events as Slack does, signed with the signing secret."""

    def __init__(self, url: str, secret: str, *, team_id: str = TEAM_ID) -> None:
        self.url, self.secret, self.team_id = url, secret, team_id
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_600_000_000 + n}.{n:06d}"

    async def post(self, body: str, content_type: str, *, retry_num: int | None = None,
                   secret: str | None = None, timestamp: int | None = None) -> Delivery:
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp,
                   "X-Slack-Signature": sign(secret or self.secret, stamp, body)}
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num),
                            "X-Slack-Retry-Reason": "http_timeout"})
        return await self.post_bytes(body.encode(), headers)

    async def post_bytes(self, body: bytes, headers: dict[str, str]) -> Delivery:
        """Any bytes with any headers, as a forger or a broken proxy would send them."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.monotonic()
        async with self._session.post(self.url, data=body, headers=headers) as resp:
            return Delivery(resp.status, await resp.text(errors="replace"),
                            time.monotonic() - started)

    def callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The Events API body that carries `event` (an `event_callback`)."""
        return {"token": "unused", "team_id": self.team_id, "api_app_id": API_APP_ID,
                "type": "event_callback", "event_id": event_id or f"Ev{next(self._ids):08d}",
                "event_time": int(time.time()), "event": event,
                "authorizations": [{"team_id": self.team_id, "user_id": BOT_USER_ID,
                                    "is_bot": True}]}

    async def event(self, event: dict[str, Any], *, event_id: str | None = None,
                    **kw: Any) -> tuple[Delivery, str]:
        body = self.callback(event, event_id)
        return await self.post(json.dumps(body), "application/json", **kw), body["event_id"]

    def mention_event(self, text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL",
                      thread_ts: str | None = None) -> dict[str, Any]:
        event = {"type": "app_mention", "user": user, "channel": channel, "ts": self.next_ts(),
                 "text": f"<@{BOT_USER_ID}> {text}", "event_ts": "0"}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def message_event(self, text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL",
                      thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
        event = {"type": "message", "channel_type": "channel", "user": user, "channel": channel,
                 "ts": self.next_ts(), "text": text, **extra}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    @staticmethod
    def reaction_event(name: str, *, user: str, channel: str, ts: str) -> dict[str, Any]:
        return {"type": "reaction_added", "user": user, "reaction": name,
                "item": {"type": "message", "channel": channel, "ts": ts},
                "item_user": BOT_USER_ID, "event_ts": "0"}

    async def click(self, action_id: str, value: str, *, user: str, channel: str,
                    message_ts: str, thread_ts: str | None, **kw: Any) -> Delivery:
        """A click on a Block Kit button: a form-encoded `payload=` of type block_actions."""
        payload = {"type": "block_actions", "api_app_id": API_APP_ID,
                   "team": {"id": self.team_id, "domain": "acme"},
                   "user": {"id": user, "username": user, "team_id": self.team_id},
                   "channel": {"id": channel, "name": "general"},
                   "container": {"type": "message", "message_ts": message_ts,
                                 "channel_id": channel, "is_ephemeral": False},
                   "message": {"type": "message", "ts": message_ts, "thread_ts": thread_ts,
                               "user": BOT_USER_ID, "text": "..."},
                   "trigger_id": "1.2.3", "response_url": "http://127.0.0.1:9/unused",
                   "actions": [{"type": "button", "action_id": action_id, "value": value,
                                "block_id": "b", "action_ts": str(time.time())}]}
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded", **kw)

    async def submit_view(self, view: dict[str, Any], values: dict[str, dict[str, Any]], *,
                          user: str) -> Delivery:
        """A modal's submission (view_submission), with what the user typed in its inputs."""
        payload = {"type": "view_submission", "api_app_id": API_APP_ID,
                   "team": {"id": self.team_id, "domain": "acme"},
                   "user": {"id": user, "username": user, "team_id": self.team_id},
                   "view": {**view, "id": view.get("id", "V1"), "team_id": self.team_id,
                            "state": {"values": values}}}
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded")

    async def command(self, text: str, *, user: str = "U0ALICE",
                      channel: str = "C0GENERAL") -> Delivery:
        body = urlencode({"token": "unused", "team_id": self.team_id, "team_domain": "acme",
                          "channel_id": channel, "channel_name": "general", "user_id": user,
                          "user_name": user, "command": "/swarm", "text": text,
                          "api_app_id": API_APP_ID, "response_url": "http://127.0.0.1:9/unused",
                          "trigger_id": "1.2.3"})
        return await self.post(body, "application/x-www-form-urlencoded")
