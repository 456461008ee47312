"""A local OpenAI-compatible chat completions server with scripted answers, for litellm."""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from swarm.llm import offline
from swarm.llm.offline import OfflineProvider
from tests.fakes.local_server import serve_locally


@dataclass(frozen=True)
class Reply:
    """One scripted answer. content None: answer like the offline rehearsal model would."""

    status: int = 200
    content: str | None = None
    delay_s: float = 0.0
    retry_after: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # the model calls these tools


def ok(content: str | None = None, **usage: int) -> Reply:
    return Reply(content=content, **usage)


def rate_limited(retry_after: int = 1) -> Reply:
    return Reply(status=429, retry_after=retry_after)


def server_error(status: int = 500) -> Reply:
    return Reply(status=status)


def slow(delay_s: float) -> Reply:
    """Answers normally, but only after `delay_s` (longer than the client's timeout)."""
    return Reply(delay_s=delay_s)


def invalid_json() -> Reply:
    return Reply(content='{"approved": "maybe", "critique": ')


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    model: str
    body: dict[str, Any]
    status: int = 0
    usage: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "\n".join(str(m.get("content") or "") for m in self.body.get("messages", []))

    @property
    def schema(self) -> str | None:
        fmt = self.body.get("response_format") or {}
        return (fmt.get("json_schema") or {}).get("name")


@dataclass
class FakeOpenAI:
    """POST /v1/chat/completions. Requests are answered from each model's script in order,
    then like the offline model; every request is recorded with what the server reported.
    `cached_tokens` is reported as cached in every 200's usage (to exercise cache prices).
    `latency_marker`: a request whose messages carry `[latency:N]` is answered after N ms, as
    the offline provider would take (the benchmarks' model latency, over HTTP)."""

    cached_tokens: int = 0
    latency_marker: bool = False
    received: list[Received] = field(default_factory=list)
    _scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    _rules: list[tuple[tuple[str, ...], Reply]] = field(default_factory=list)
    _once: list[tuple[tuple[str, ...], Reply]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _rehearsal: OfflineProvider = field(default_factory=OfflineProvider)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, *replies: Reply) -> None:
        self._scripts[model].extend(replies)

    def fail_when(self, *texts: str, reply: Reply | None = None) -> None:
        """Every request whose messages contain all of `texts` gets `reply` (default 500)."""
        self._rules.append((texts, reply or server_error()))

    def once_when(self, *texts: str, reply: Reply) -> None:
        """The first request whose messages contain all of `texts` gets `reply`."""
        self._once.append((texts, reply))

    def requests(self, model: str | None = None) -> list[Received]:
        return [r for r in self.received if model is None or r.model == model]

    def reported(self, model: str | None = None) -> dict[str, int]:
        """The sums of the usage this server reported in its 200 answers."""
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
        for r in self.requests(model):
            if r.usage:
                totals["prompt_tokens"] += r.usage["prompt_tokens"]
                totals["completion_tokens"] += r.usage["completion_tokens"]
                totals["cached_tokens"] += r.usage["prompt_tokens_details"]["cached_tokens"]
        return totals

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner, self.port = await serve_locally(app, handler_cancellation=True,
                                                      shutdown_timeout=0.5)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        got = Received(time.monotonic(), str(body.get("model")), body)
        self.received.append(got)
        script = self._scripts.get(got.model)
        rule = next((r for texts, r in self._rules if all(x in got.text for x in texts)), None)
        once = next((i for i, (texts, _) in enumerate(self._once)
                     if all(x in got.text for x in texts)), None)
        if rule is None and once is not None:
            rule = self._once.pop(once)[1]
        reply = rule or (script.popleft() if script else Reply())
        delay = reply.delay_s or (offline.marked_latency(body.get("messages", [])) or 0.0
                                  if self.latency_marker else 0.0)
        if delay:
            await asyncio.sleep(delay)
        got.status = reply.status
        if reply.status == 429:
            return web.json_response(
                {"error": {"message": "Rate limit reached, retry later.", "type": "requests",
                           "code": "rate_limit_exceeded"}},
                status=429, headers={"Retry-After": str(reply.retry_after or 1)})
        if reply.status != 200:
            return web.json_response({"error": {"message": "The server had an error.",
                                                "type": "server_error"}}, status=reply.status)
        message = self._message(body, reply)
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else \
            sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        completion = reply.completion_tokens if reply.completion_tokens is not None else \
            max(1, len(str(message.get("content") or message.get("tool_calls")).split()))
        got.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion,
                     "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt)}}
        return web.json_response({
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion",
            "created": int(time.time()), "model": got.model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
            "usage": got.usage})

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        if reply.tool_calls:
            return {"role": "assistant", "content": None, "tool_calls": reply.tool_calls}
        if reply.content is not None:
            return {"role": "assistant", "content": reply.content}
        params = {"response_format": body.get("response_format"), "tools": body.get("tools")}
        message = self._rehearsal.respond(body.get("messages", []), params)
        return {"role": "assistant", "content": message.get("content"),
                **({"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {})}
