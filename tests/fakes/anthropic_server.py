"""A local Anthropic Messages API (POST /v1/messages) answering like the offline model."""
from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from swarm.llm.offline import OfflineProvider
from tests.fakes.local_server import LocalServer


def as_openai(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """An Anthropic request as the offline model reads it: OpenAI-shaped messages, the params
    (schema name, tools), and how a structured answer is wanted (tool name, or None: text)."""
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in body.get("messages", []):
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        results = [b for b in blocks if b.get("type") == "tool_result"]
        for r in results:
            inner = r.get("content")
            messages.append({"role": "tool", "content": inner if isinstance(inner, str)
                             else json.dumps(inner)})
        if text or not results:
            messages.append({"role": m.get("role"), "content": text})
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    forced = next((t for t in tools if choice.get("type") == "tool"
                   and t.get("name") == choice.get("name")), None)
    schema = forced["input_schema"] if forced else (body.get("output_format") or {}).get("schema")
    params: dict[str, Any] = {
        "tools": [{"type": "function", "function": {"name": t["name"]}} for t in tools
                  if t is not forced]}
    if schema is not None:
        params["response_format"] = {"json_schema": {"name": schema.get("title")}}
    return messages, params, forced["name"] if forced else None


@dataclass
class FakeAnthropic(LocalServer):
    """Every request is recorded with the usage reported for it. `fail_with` statuses answer
    the next requests in order (529: Anthropic's overloaded_error)."""

    received: list[dict[str, Any]] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)
    fail_with: deque[int] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _rehearsal: OfflineProvider = field(default_factory=OfflineProvider)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        if self.fail_with:
            status = self.fail_with.popleft()
            kind = {529: "overloaded_error", 429: "rate_limit_error"}.get(status, "api_error")
            return web.json_response({"type": "error", "error": {
                "type": kind, "message": "Overloaded" if status == 529 else "Internal error"}},
                status=status)
        messages, params, tool_name = as_openai(body)
        reply = self._rehearsal.respond(messages, params)
        if tool_name is not None:  # a structured answer through the forced tool
            blocks = [{"type": "tool_use", "id": f"toolu_{next(self._ids)}", "name": tool_name,
                       "input": json.loads(reply["content"])}]
        elif reply.get("tool_calls"):
            blocks = [{"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"],
                       "input": json.loads(tc["function"]["arguments"])}
                      for tc in reply["tool_calls"]]
        else:
            blocks = [{"type": "text", "text": reply["content"]}]
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        usage = {"input_tokens": prompt, "output_tokens": max(1, len(json.dumps(blocks).split())),
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        self.usages.append(usage)
        return web.json_response({
            "id": f"msg_{next(self._ids)}", "type": "message", "role": "assistant",
            "model": body.get("model"), "content": blocks, "stop_sequence": None,
            "stop_reason": "tool_use" if blocks[0]["type"] == "tool_use" else "end_turn",
            "usage": usage})
