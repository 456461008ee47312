"""A local Slack Web API and Socket Mode server that records every call the bot makes."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.local_server import serve_locally, wait_until

TEAM_ID, BOT_USER_ID, BOT_ID, API_APP_ID = "T0TEAM", "U0BOT", "B0BOT", "A0APP"
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})  # Slack's enum


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    at: float  # time.monotonic() when it arrived
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """Everything a human would read in this call: its text and its blocks' text."""
        return self.params.get("text", "") + "\n" + json.dumps(self.params.get("blocks", []))


@dataclass(frozen=True)
class Refusal:
    method: str
    error: str
    channel: str | None
    needle: str | None

    def matches(self, call: Call) -> bool:
        return call.method == self.method and self.channel in (None, call.params.get("channel")) \
            and (self.needle is None or self.needle in call.text())


class FakeSlackAPI:
    """Answers the Web API methods the bot uses with plausible payloads; `rate_limit()` makes
    a method answer 429 with Retry-After a number of times, `refuse()` makes it answer an error
    as Slack does (HTTP 200, `ok: false`). `/socket` speaks Socket Mode."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.socket_received: list[dict[str, Any]] = []
        self.installs: dict[str, str] = {}  # OAuth code -> team id it installs into
        self.uploaded: dict[str, bytes] = {}  # file id -> the bytes sent to its upload URL
        self.workspace_admins: set[str] = set()  # users.info says is_admin for these
        self._ts = itertools.count(1)
        self._limited: dict[str, tuple[int, int]] = {}
        self._refusals: list[Refusal] = []
        self._flowing = asyncio.Event()  # cleared: Slack is unreachable (see stall)
        self._flowing.set()
        self.stalled_calls = 0
        self._socket: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> FakeSlackAPI:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk GETs users.info
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket_mode)
        self._runner, self.port = await serve_locally(app)
        return self

    async def close(self) -> None:
        self._flowing.set()  # stalled calls end, so the server can stop
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- what a test asks of it --------------------------------------------------------------
    def rate_limit(self, method: str, times: int, retry_after: int = 0) -> None:
        self._limited[method] = (times, retry_after)

    def refuse(self, method: str, error: str, *, channel: str | None = None,
               needle: str | None = None) -> None:
        """From now on answer `error` to `method` (in `channel`, for a text with `needle`)."""
        self._refusals.append(Refusal(method, error, channel, needle))

    def stall(self) -> None:
        """From now on every call hangs, as when Slack is unreachable (the connection is taken,
        no answer comes), until flow() or close(); a call so released answers 503 and is not
        recorded among the calls."""
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    def to(self, method: str, *, ok_only: bool = True) -> list[Call]:
        return [c for c in self.calls if c.method == method and (
            not ok_only or (c.status == 200 and c.answer.get("ok") is not False))]

    def files(self) -> list[tuple[Call, Call, bytes]]:
        """Each file shared (files.completeUploadExternal): its upload-URL call, the completion
        (channel_id, thread_ts) and the bytes uploaded."""
        asked = {c.answer["file_id"]: c for c in self.to("files.getUploadURLExternal")}
        return [(asked[f["id"]], c, self.uploaded[f["id"]])
                for c in self.to("files.completeUploadExternal") for f in c.params["files"]]

    def posted(self, needle: str) -> list[Call]:
        """Successful chat.postMessage calls whose text or blocks contain `needle`."""
        return [c for c in self.to("chat.postMessage") if needle in c.text()]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 20.0,
                       what: str = "condition") -> Any:
        return await wait_until(check, timeout, what, lambda: [c.method for c in self.calls])

    async def socket_send(self, message: dict[str, Any]) -> None:
        await self.wait_for(lambda: self._socket is not None, what="a Socket Mode connection")
        assert self._socket is not None
        await self._socket.send_str(json.dumps(message))

    # -- the Web API ---------------------------------------------------------------------------
    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"

    async def _api(self, request: web.Request) -> web.Response:
        if not self._flowing.is_set():
            self.stalled_calls += 1
            await self._flowing.wait()
            return web.json_response({"ok": False, "error": "fatal_error"}, status=503)
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        token = token or params.pop("token", None)
        times, retry_after = self._limited.get(method, (0, 0))
        if times > 0:
            self._limited[method] = (times - 1, retry_after)
            self.calls.append(Call(method, params, token, time.monotonic(), 429))
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(retry_after)})
        call = Call(method, params, token, time.monotonic())
        refused = next((r.error for r in self._refusals if r.matches(call)), None)
        call.answer = {"ok": False, "error": refused} if refused else \
            self._answer(method, params, token)
        self.calls.append(call)
        return web.json_response(call.answer)

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)  # slack_sdk sends some as a query string
        if request.content_type == "application/json":
            params.update(await request.json())
        else:
            params.update(await request.post())
        for key in ("blocks", "files"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    def _answer(self, method: str, p: dict[str, Any], token: str | None) -> dict[str, Any]:
        team = next((t for code, t in self.installs.items() if token == f"xoxb-{code}"), TEAM_ID)
        match method:
            case "auth.test":
                return {"ok": True, "url": "https://acme.slack.com/", "team": "Acme",
                        "user": "threadswarm", "team_id": team, "user_id": BOT_USER_ID,
                        "bot_id": BOT_ID}
            case "chat.postMessage":
                return {"ok": True, "channel": p["channel"], "ts": self._next_ts(),
                        "message": {"text": p.get("text", ""), "user": BOT_USER_ID}}
            case "chat.update":
                return {"ok": True, "channel": p["channel"], "ts": p["ts"],
                        "text": p.get("text", "")}
            case "chat.postEphemeral":
                return {"ok": True, "message_ts": self._next_ts()}
            case "reactions.add":
                return {"ok": True}
            case "agents.sessions.setStatus":
                if p.get("status") not in SESSION_STATUSES or not p.get("channel_id"):
                    return {"ok": False, "error": "invalid_arguments"}
                return {"ok": True, "status": p["status"]}
            case "views.open":
                return {"ok": True, "view": {"id": f"V{next(self._ts):08d}",
                                             **(p.get("view") if isinstance(p.get("view"), dict)
                                                else json.loads(p.get("view") or "{}"))}}
            case "users.info":
                user = p.get("user", "")
                return {"ok": True, "user": {"id": user, "team_id": team, "name": user.lower(),
                                             "is_admin": user in self.workspace_admins,
                                             "is_owner": False, "is_primary_owner": False}}
            case "files.getUploadURLExternal":
                file_id = f"F{next(self._ts):08d}"
                return {"ok": True, "file_id": file_id,
                        "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}"}
            case "files.completeUploadExternal":
                return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")}
                                              for f in p["files"]]}
            case "apps.connections.open":
                return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}
            case "oauth.v2.access":
                code = p.get("code", "")
                installed = self.installs.get(code)
                if installed is None:
                    return {"ok": False, "error": "invalid_code"}
                return {"ok": True, "app_id": API_APP_ID, "access_token": f"xoxb-{code}",
                        "token_type": "bot", "scope": "chat:write,commands",
                        "bot_user_id": BOT_USER_ID, "team": {"id": installed, "name": "Other"},
                        "enterprise": None, "is_enterprise_install": False,
                        "authed_user": {"id": "U0INSTALLER"}}
        return {"ok": False, "error": "unknown_method"}

    async def _upload(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.uploaded[request.match_info["file_id"]] = body
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"],
                                          "bytes": len(body)}, None, time.monotonic()))
        return web.Response(text=f"OK - {len(body)}")

    # -- Socket Mode ---------------------------------------------------------------------------
    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._socket = ws
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "connection_info": {"app_id": API_APP_ID},
                                      "debug_info": {"host": "fake", "approximate_connection_"
                                                     "time": 3600}}))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.socket_received.append(json.loads(msg.data))
        if self._socket is ws:
            self._socket = None
        return ws
