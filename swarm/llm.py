"""The LLM layer: every model call goes through litellm, with tokens and cost recorded."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import litellm
from pydantic import BaseModel, ValidationError

from swarm import offline
from swarm.config import Settings
from swarm.models import LLMCall

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True
T = TypeVar("T", bound=BaseModel)


class LLMError(RuntimeError):
    """A model call failed after the layer's own handling; the message is safe to show."""


class StructuredOutputError(LLMError):
    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    message: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallContext:
    """Who a call is for; the layer appends one LLMCall row per call to `calls`."""

    objective_id: int | None = None
    step_id: int | None = None
    team_id: str | None = None
    calls: list[LLMCall] = field(default_factory=list)


class LLM:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        offline.register(settings.offline_latency_ms / 1000)

    def model_for(self, tier: str) -> str:
        return self.settings.model_for(tier)

    @property
    def offline(self) -> bool:
        return any(self.model_for(t).startswith(offline.PROVIDER + "/")
                   for t in ("planner", "worker", "fast"))

    async def complete(self, tier: str, messages: list[dict[str, Any]], ctx: CallContext, *,
                       tools: list[dict[str, Any]] | None = None,
                       response_format: type[BaseModel] | None = None) -> Completion:
        model = self.model_for(tier)
        kwargs: dict[str, Any] = {"timeout": self.settings.llm_timeout_s}
        if tools:
            kwargs["tools"] = tools
        if response_format is not None:
            kwargs["response_format"] = response_format
        started = time.perf_counter()
        try:
            response = await litellm.acompletion(model=model, messages=messages, **kwargs)
        except Exception as exc:  # every provider error: record it, then say it plainly
            ctx.calls.append(LLMCall(objective_id=ctx.objective_id, step_id=ctx.step_id,
                                     team_id=ctx.team_id, tier=tier, model=model, ok=False,
                                     error=f"{type(exc).__name__}: {exc}"[:500],
                                     latency_ms=(time.perf_counter() - started) * 1000))
            log.warning("llm.call_failed tier=%s model=%s error=%s", tier, model,
                        type(exc).__name__)
            raise LLMError(f"the {tier} model ({model}) failed: {type(exc).__name__}") from exc
        ctx.calls.append(self._record(tier, model, response, ctx, started))
        msg = response.choices[0].message
        calls = [ToolCall(tc.id, tc.function.name, _arguments(tc.function.arguments))
                 for tc in (msg.tool_calls or [])]
        return Completion(content=msg.content or "", tool_calls=calls,
                          message=msg.model_dump(exclude_none=True))

    async def structured(self, tier: str, messages: list[dict[str, Any]], schema: type[T],
                         ctx: CallContext) -> T:
        """One call whose answer must parse as `schema`; raises StructuredOutputError if not."""
        completion = await self.complete(tier, messages, ctx, response_format=schema)
        try:
            return schema.model_validate_json(_strip_fences(completion.content))
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}"
                      for e in exc.errors()[:10]]
            raise StructuredOutputError(f"the {tier} model's answer was not a valid "
                                        f"{schema.__name__}", errors) from exc

    def _record(self, tier: str, model: str, response: Any, ctx: CallContext,
                started: float) -> LLMCall:
        usage = getattr(response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", 0) or 0
        completion = getattr(usage, "completion_tokens", 0) or 0
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", 0) or 0
        cost = (getattr(response, "_hidden_params", {}) or {}).get("response_cost")
        if cost is None:
            try:
                cost = litellm.completion_cost(completion_response=response, model=model)
            except Exception:  # a model with no price in the cost map costs what we cannot know
                cost = 0.0
        return LLMCall(objective_id=ctx.objective_id, step_id=ctx.step_id, team_id=ctx.team_id,
                       tier=tier, model=model, prompt_tokens=prompt, completion_tokens=completion,
                       cached_tokens=cached, cost=float(cost or 0.0),
                       latency_ms=(time.perf_counter() - started) * 1000)


def _arguments(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_invalid": raw}
    return value if isinstance(value, dict) else {"_invalid": raw}


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[-1].rsplit("```", 1)[0]
    return text
