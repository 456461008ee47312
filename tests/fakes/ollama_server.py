"""A local Ollama chat API (POST /api/chat, what litellm's `ollama_chat/` sends) answering like
the offline model, tool calls and JSON-schema `format` included."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from swarm.llm.offline import OfflineProvider
from tests.fakes.local_server import LocalServer


@dataclass
class FakeOllama(LocalServer):
    received: list[dict[str, Any]] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)
    _rehearsal: OfflineProvider = field(default_factory=OfflineProvider)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self._chat)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        messages = body.get("messages", [])
        fmt = body.get("format")
        params: dict[str, Any] = {"tools": body.get("tools") or []}
        if isinstance(fmt, dict):
            params["response_format"] = {"json_schema": {"name": fmt.get("title")}}
        reply = self._rehearsal.respond(messages, params)
        message: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or ""}
        if reply.get("tool_calls"):
            message["tool_calls"] = [
                {"function": {"name": tc["function"]["name"],
                              "arguments": json.loads(tc["function"]["arguments"])}}
                for tc in reply["tool_calls"]]
        usage = {"prompt_eval_count": sum(len(str(m.get("content") or "").split())
                                          for m in messages),
                 "eval_count": max(1, len(json.dumps(message).split()))}
        self.usages.append(usage)
        return web.json_response({"model": body.get("model"),
                                  "created_at": "2026-01-01T00:00:00Z", "message": message,
                                  "done": True, "done_reason": "stop", **usage})
