"""A local Discord: enough REST and gateway for the real discord.py client, recording every call.

REST under /api/v10 (what the bot uses: login, messages, threads, reactions, interaction
callbacks and followups, command sync, /gateway/bot) and the gateway websocket at /gateway
(HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME with a replay, dispatches). Tests
act as Discord's users through `mention`, `message`, `react`, `click` and `command`."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.local_server import LocalServer, wait_until

GUILD_ID, CHANNEL_ID, BOT_ID = "110000000000000001", "110000000000000002", "120000000000000001"
ALICE, MALLORY, ADMIN = "130000000000000001", "130000000000000002", "130000000000000003"
NAMES = {BOT_ID: "threadswarm", ALICE: "alice", MALLORY: "mallory", ADMIN: "admin"}
MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = (1 << 11) | (1 << 10) | (1 << 6) | (1 << 16) | (1 << 38)  # send, view...
TOKEN = "MTIwMDAwMDAwMDAwMDAwMDAx.GfAkEx.discord-test-token-0123456789ab"  # real shape


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": NAMES.get(user_id, user_id), "discriminator": "0",
            "global_name": NAMES.get(user_id), "avatar": None, "bot": user_id == BOT_ID}


def member_payload(user_id: str, permissions: int = MEMBER_PERMISSIONS) -> dict[str, Any]:
    return {"user": user_payload(user_id), "roles": [], "joined_at": now_iso(), "deaf": False,
            "mute": False, "flags": 0, "permissions": str(permissions)}


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int = 200
    answer: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def text(self) -> str:
        """What a human would read in this call: content, embeds, button labels."""
        return json.dumps({k: self.body.get(k) for k in ("content", "embeds", "components")})

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.body.get("components") or []
                for c in row.get("components", []) if "custom_id" in c]


class FakeDiscord(LocalServer):
    """`rate_limit(route, times, retry_after)` answers 429 as Discord does; `refuse(route,
    status, code)` answers an error. A route is "METHOD /path-pattern", e.g.
    "PATCH /channels/{channel_id}/messages/{message_id}". `uploads_refused = (status, code)`
    answers that error to every call that attaches a file (None: accepted again)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        self.identifies = 0
        self.resumes = 0
        self.replay_last_on_resume = False
        self._ids = itertools.count(140_000_000_000_000_001)
        self._limited: dict[str, tuple[int, float]] = {}
        self._refused: dict[str, tuple[int, int]] = {}
        self.uploads_refused: tuple[int, int] | None = None
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._sent: list[dict[str, Any]] = []  # dispatches, for RESUME
        self._session = "fake-session-1"
        self.dispatched_at: dict[str, float] = {}  # interaction token -> when it was sent

    def next_id(self) -> str:
        return str(next(self._ids))

    # -- lifecycle -------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        await super().close()

    # -- what a test asks of it ------------------------------------------------------------
    def rate_limit(self, route: str, times: int, retry_after: float) -> None:
        self._limited[route] = (times, retry_after)

    def refuse(self, route: str, status: int, code: int) -> None:
        self._refused[route] = (status, code)

    def to(self, route: str, *, ok_only: bool = True) -> list[Call]:
        return [c for c in self.calls if f"{c.method} {c.path}" == route
                or _matches(route, c.method, c.path)
                if not ok_only or c.status < 300]

    def posted(self, needle: str) -> list[Call]:
        """Messages the bot created whose text contains `needle`."""
        return [c for c in self.to("POST /channels/{channel_id}/messages") if needle in c.text()]

    def edits_of(self, message_id: str) -> list[Call]:
        return [c for c in self.to("PATCH /channels/{channel_id}/messages/{message_id}")
                if c.path.endswith(f"/{message_id}")]

    def callbacks(self) -> list[Call]:
        """Interaction responses and followups: what the clicking user was told."""
        return [c for c in self.calls if c.status < 300 and (
            c.path.startswith("/interactions/") or c.path.startswith("/webhooks/"))]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 20.0,
                       what: str = "condition") -> Any:
        return await wait_until(check, timeout, what,
                                lambda: [f"{c.method} {c.path} {c.status}" for c in self.calls])

    async def connected(self) -> None:
        await self.wait_for(lambda: self._ws is not None and self.identifies + self.resumes,
                            what="a gateway session")

    # -- Discord's users -------------------------------------------------------------------
    def message_event(self, content: str, *, user: str = ALICE, channel: str = CHANNEL_ID,
                      mentions_bot: bool = False, message_id: str | None = None
                      ) -> dict[str, Any]:
        member = {k: v for k, v in member_payload(user).items() if k != "user"}
        return {"id": message_id or self.next_id(), "channel_id": channel, "guild_id": GUILD_ID,
                "author": user_payload(user), "member": member,
                "content": content, "timestamp": now_iso(), "edited_timestamp": None,
                "tts": False, "mention_everyone": False, "mention_roles": [],
                "mentions": [user_payload(BOT_ID)] if mentions_bot else [], "attachments": [],
                "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": []}

    async def mention(self, goal: str, **kw: Any) -> dict[str, Any]:
        event = self.message_event(f"<@{BOT_ID}> {goal}", mentions_bot=True, **kw)
        await self.dispatch("MESSAGE_CREATE", event)
        return event

    async def message(self, content: str, **kw: Any) -> dict[str, Any]:
        event = self.message_event(content, **kw)
        await self.dispatch("MESSAGE_CREATE", event)
        return event

    async def react(self, message_id: str, emoji: str, *, user: str = ALICE) -> None:
        channel = self.messages[message_id]["channel_id"]
        await self.dispatch("MESSAGE_REACTION_ADD", {
            "user_id": user, "channel_id": channel, "message_id": message_id,
            "guild_id": GUILD_ID, "member": member_payload(user), "burst": False, "type": 0,
            "message_author_id": BOT_ID, "emoji": {"id": None, "name": emoji}})

    def _interaction(self, kind: int, data: dict[str, Any], user: str, channel: str,
                     permissions: int) -> dict[str, Any]:
        return {"id": self.next_id(), "application_id": BOT_ID, "type": kind, "data": data,
                "guild_id": GUILD_ID, "channel_id": channel,
                "channel": {"id": channel, "type": 11 if channel in self.threads else 0,
                            "guild_id": GUILD_ID},
                "member": member_payload(user, permissions), "token": f"tok-{self.next_id()}",
                "version": 1, "app_permissions": str(MEMBER_PERMISSIONS), "locale": "en-US",
                "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners":
                {"0": GUILD_ID}, "context": 0, "attachment_size_limit": 10 * 1024 * 1024}

    async def click(self, message_id: str, custom_id: str, *, user: str = ALICE,
                    permissions: int = MEMBER_PERMISSIONS,
                    as_shown: dict[str, Any] | None = None) -> str:
        """A click on a button of a message the bot posted; returns the interaction token.
        `as_shown`: the message as the clicker's screen still showed it (a click racing an
        edit), else as it is now."""
        message = as_shown or self.messages[message_id]
        payload = self._interaction(3, {"custom_id": custom_id, "component_type": 2}, user,
                                    message["channel_id"], permissions)
        payload["message"] = message
        return await self._interact(payload)

    async def command(self, text: str, *, user: str = ALICE, channel: str = CHANNEL_ID,
                      permissions: int = MEMBER_PERMISSIONS) -> str:
        """`/swarm command:<text>`; returns the interaction token."""
        options = [{"name": "command", "type": 3, "value": text}] if text else []
        payload = self._interaction(2, {"id": "150000000000000001", "name": "swarm", "type": 1,
                                        "options": options}, user, channel, permissions)
        return await self._interact(payload)

    async def _interact(self, payload: dict[str, Any]) -> str:
        token = str(payload["token"])
        self.dispatched_at[token] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return token

    def first_answer_s(self, token: str) -> float:
        """How long the bot took to answer (or defer) the interaction: Discord waits 3 s."""
        first = next(c for c in self.calls if c.path.startswith("/interactions/")
                     and token in c.path)
        return first.at - self.dispatched_at[token]

    def answers(self, token: str) -> list[Call]:
        return [c for c in self.callbacks() if token in c.path]

    # -- the gateway -----------------------------------------------------------------------
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await self.connected()
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        self._sent.append(frame)
        assert self._ws is not None
        await self._ws.send_str(json.dumps(frame))

    async def drop(self, code: int = 4000) -> None:
        """Close the gateway connection as Discord does on a hiccup: the client RESUMEs."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close(code=code)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45_000}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, data = frame.get("op"), frame.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies += 1
                await self._ready(ws)
            elif op == 6:
                self.resumes += 1
                await self._resume(ws, int(data.get("seq") or 0))
        if self._ws is ws:
            self._ws = None
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": {
            "v": 10, "user": user_payload(BOT_ID), "guilds": [{"id": GUILD_ID,
                                                                "unavailable": True}],
            "session_id": self._session, "resume_gateway_url": self.gateway_url,
            "shard": [0, 1], "application": {"id": BOT_ID, "flags": 0}}}))
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._seq,
                                      "d": self._guild()}))
        self._ws = ws

    async def _resume(self, ws: web.WebSocketResponse, seq: int) -> None:
        since = seq - 1 if self.replay_last_on_resume else seq
        for frame in self._sent:
            if frame["s"] > since:
                await ws.send_str(json.dumps(frame))
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        self._ws = ws

    def _guild(self) -> dict[str, Any]:
        everyone = {"id": GUILD_ID, "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS),
                    "position": 0, "color": 0, "hoist": False, "managed": False,
                    "mentionable": False, "flags": 0}
        channel = {"id": CHANNEL_ID, "type": 0, "name": "general", "position": 0,
                   "guild_id": GUILD_ID, "permission_overwrites": [], "nsfw": False,
                   "parent_id": None, "rate_limit_per_user": 0}
        return {"id": GUILD_ID, "name": "Acme", "owner_id": ADMIN, "icon": None,
                "member_count": 4, "large": False, "unavailable": False,
                "roles": [everyone], "channels": [channel], "threads": list(self.threads.values()),
                "members": [member_payload(BOT_ID)], "emojis": [], "stickers": [],
                "features": [], "voice_states": [], "presences": [], "stage_instances": [],
                "guild_scheduled_events": [], "soundboard_sounds": [], "premium_tier": 0,
                "preferred_locale": "en-US", "joined_at": now_iso(), "verification_level": 0,
                "default_message_notifications": 0, "explicit_content_filter": 0,
                "mfa_level": 0, "nsfw_level": 0, "system_channel_flags": 0}

    # -- REST --------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body, files = await _read_body(request)
        call = Call(request.method, path, body, time.monotonic(), files=files)
        self.calls.append(call)
        route = next((r for r in self._limited if _matches(r, request.method, path)), None)
        if route is not None and self._limited[route][0] > 0:
            times, retry_after = self._limited[route]
            self._limited[route] = (times - 1, retry_after)
            call.status = 429
            return _json({"message": "You are being rate limited.", "retry_after":
                          retry_after, "global": False}, status=429, headers={
                "Via": "1.1 google", "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": str(retry_after), "X-RateLimit-Bucket": "fake",
                "Retry-After": str(int(retry_after))})
        refused = next((v for r, v in self._refused.items()
                        if _matches(r, request.method, path)), None)
        if files and self.uploads_refused is not None:
            refused = self.uploads_refused
        if refused is not None:
            call.status = refused[0]
            return _json({"message": "refused", "code": refused[1]}, status=refused[0])
        status, answer = self._answer(request.method, path, body, files)
        call.status, call.answer = status, answer
        if answer is None:
            return web.Response(status=status)
        return _json(answer, status=status)

    def _answer(self, method: str, path: str, body: dict[str, Any],
                files: list[tuple[str, bytes]]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["users", "@me"]:
                return 200, user_payload(BOT_ID)
            case "GET", ["oauth2", "applications", "@me"]:
                return 200, {"id": BOT_ID, "name": "threadswarm", "description": "", "icon": None,
                             "bot_public": False, "bot_require_code_grant": False,
                             "owner": user_payload(ADMIN), "verify_key": "0" * 64, "flags": 0}
            case "GET", ["gateway", "bot"]:
                return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": {
                    "total": 1000, "remaining": 999, "reset_after": 0,
                    "max_concurrency": 1}}
            case "POST", ["channels", channel, "messages"]:
                return 200, self._store(self.next_id(), channel, body, files)
            case "PATCH", ["channels", channel, "messages", message_id]:
                if message_id not in self.messages:
                    return 404, {"message": "Unknown Message", "code": 10008}
                return 200, self._store(message_id, channel, body, files)
            case "POST", ["channels", channel, "messages", message_id, "threads"]:
                return self._thread(channel, message_id, body)
            case ("PUT" | "DELETE"), ["channels", _, "messages", _, "reactions", *_]:
                return 204, None
            case "POST", ["interactions", interaction_id, _, "callback"]:
                return 200, {"interaction": {"id": interaction_id, "type": 3,
                                             "response_message_loading": body.get("type") == 5,
                                             "response_message_ephemeral": bool(
                                                 (body.get("data") or {}).get("flags", 0) & 64)},
                             "resource": {"type": body.get("type")}}
            case ("POST" | "PATCH"), ["webhooks", _, _, *_]:
                return 200, self._store(self.next_id(), CHANNEL_ID, body, files)
            case "PUT", ["applications", _, *rest]:
                return 200, [{"id": self.next_id(), "application_id": BOT_ID, "version": "1",
                              "type": c.get("type", 1), "default_member_permissions": None,
                              "guild_id": rest[1] if rest[:1] == ["guilds"] else None,
                              **c} for c in body.get("_list", [])]
        return 404, {"message": "404: Not Found", "code": 0}

    def _store(self, message_id: str, channel: str, body: dict[str, Any],
               files: list[tuple[str, bytes]]) -> dict[str, Any]:
        old = self.messages.get(message_id, {})
        message = self.message_event("", user=BOT_ID, channel=old.get("channel_id", channel),
                                     message_id=message_id)
        message.pop("member")
        for key in ("content", "embeds", "components"):
            message[key] = body.get(key, old.get(key, message[key]))
        message["attachments"] = [{"id": self.next_id(), "filename": name, "size": len(data),
                                   "url": f"{self.base_url}/files/{name}",
                                   "proxy_url": f"{self.base_url}/files/{name}"}
                                  for name, data in files] or old.get("attachments", [])
        if old:
            message["edited_timestamp"] = now_iso()
        self.messages[message_id] = message
        return message

    def _thread(self, channel: str, message_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        if message_id in self.threads:  # as Discord answers a second thread for one message
            return 400, {"message": "A thread has already been created for this message",
                         "code": 160004}
        thread = {"id": message_id, "guild_id": GUILD_ID, "parent_id": channel,
                  "owner_id": BOT_ID, "name": body.get("name", "thread"), "type": 11,
                  "last_message_id": None, "message_count": 0, "member_count": 1,
                  "rate_limit_per_user": 0, "flags": 0, "thread_metadata": {
                      "archived": False, "auto_archive_duration": body.get(
                          "auto_archive_duration", 1440), "archive_timestamp": now_iso(),
                      "locked": False}}
        self.threads[message_id] = thread
        asyncio.get_running_loop().create_task(
            self.dispatch("THREAD_CREATE", thread | {"newly_created": True}))
        return 201, thread


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None
          ) -> web.Response:
    """As Discord answers: discord.py reads JSON only under exactly `application/json`."""
    return web.Response(body=json.dumps(body).encode(), status=status, headers={
        "Content-Type": "application/json", **(headers or {})})


def _matches(route: str, method: str, path: str) -> bool:
    want_method, _, pattern = route.partition(" ")
    if want_method != method:
        return False
    want, got = pattern.strip("/").split("/"), path.strip("/").split("/")
    return len(want) == len(got) and all(w == g or (w.startswith("{") and w.endswith("}"))
                                         for w, g in zip(want, got, strict=True))


async def _read_body(request: web.Request) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    if request.content_type == "application/json":
        data = await request.json()
        return (data if isinstance(data, dict) else {"_list": data}), []
    if request.content_type.startswith("multipart/"):
        body: dict[str, Any] = {}
        files: list[tuple[str, bytes]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "payload_json":
                body = json.loads(await part.text())  # type: ignore[union-attr]
            else:
                files.append((part.filename or "file", await part.read()))  # type: ignore[union-attr]
        return body, files
    return {}, []
