"""The LLM layer: every model call goes through litellm, with tokens and cost recorded."""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import litellm
import openai
from litellm.integrations.custom_logger import CustomLogger
from pydantic import BaseModel, ValidationError

from swarm.config import Settings
from swarm.llm import offline, prices
from swarm.llm.budget import Budget, Hold, Usage
from swarm.llm.faults import FaultInjector, FaultPlan
from swarm.llm.router import Chain, build_router, chains
from swarm.prompts import render
from swarm.redact import redact_messages
from swarm.store.models import LLMCall, utcnow

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True
T = TypeVar("T", bound=BaseModel)


class LLMError(RuntimeError):
    """A model call failed after the layer's own handling; the message is safe to show."""


class StructuredOutputError(LLMError):
    def __init__(self, message: str, errors: list[str], attempts: int = 1) -> None:
        super().__init__(message)
        self.errors = errors
        self.attempts = attempts


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
    """Who a call is for; the layer appends one LLMCall row per attempt to `calls` (and books
    them in the database as the call returns, when it has a book)."""

    objective_id: int | None = None
    step_id: int | None = None
    team_id: str | None = None
    run_id: int | None = None
    calls: list[LLMCall] = field(default_factory=list)


class Books(Protocol):
    """Writes a call's rows, then releases its budget hold (swarm.llm.calls.CallBook)."""

    def submit(self, rows: list[LLMCall], hold: Hold | None) -> None: ...


@dataclass(frozen=True)
class Recovery:
    """A call being recovered: shown live in the thread (the CallRetried event)."""

    tier: str
    model: str
    problem: str
    action: str  # retry | fallback | re-ask
    next_model: str


RecoveryListener = Callable[[CallContext, Recovery], None]


@dataclass
class _Attempt:
    model: str
    at: datetime
    started: float = field(default_factory=time.perf_counter)
    latency_ms: float | None = None
    problem: str | None = None
    ok: bool = False

    def close(self) -> None:
        if self.latency_ms is None:
            self.latency_ms = (time.perf_counter() - self.started) * 1000


@dataclass
class _Call:
    """The attempts of one logical call, filled in by litellm's hooks as the Router makes them."""

    tier: str
    ctx: CallContext
    notify: Callable[[CallContext, Recovery], None]
    attempts: list[_Attempt] = field(default_factory=list)

    def start(self, model: str) -> None:
        last = self.attempts[-1] if self.attempts else None
        self.attempts.append(_Attempt(model, utcnow()))
        if last is not None and not last.ok:
            last.close()
            self.notify(self.ctx, Recovery(self.tier, last.model, last.problem or "no answer",
                                           "retry" if last.model == model else "fallback", model))

    def failed(self, exc: BaseException) -> None:
        if self.attempts:
            self.attempts[-1].problem = describe(exc)
            self.attempts[-1].close()

    def succeeded(self) -> None:
        if self.attempts:
            self.attempts[-1].ok = True
            self.attempts[-1].close()

    def rows(self, response: Any, fallback_model: str) -> list[LLMCall]:
        ctx, rows = self.ctx, []
        if response is not None and not any(a.ok for a in self.attempts):
            self.attempts.append(_Attempt(fallback_model, utcnow(), ok=True))  # no hook ran
        for a in self.attempts:
            a.close()
            row = LLMCall(objective_id=ctx.objective_id, step_id=ctx.step_id, team_id=ctx.team_id,
                          run_id=ctx.run_id, tier=self.tier, model=a.model, ok=a.ok,
                          latency_ms=a.latency_ms, created_at=a.at, prompt_tokens=0,
                          completion_tokens=0, cached_tokens=0, cost=0.0)
            if a.ok and response is not None:
                _usage(row, response)
            else:
                row.error = (a.problem or "no answer")[:500]
            rows.append(row)
        return rows


_CURRENT: ContextVar[_Call | None] = ContextVar("threadswarm_llm_call", default=None)


class _AttemptLog(CustomLogger):
    """litellm calls these around every deployment attempt the Router makes, inline."""

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> dict | None:
        if (call := _CURRENT.get()) is not None:
            call.start(str(kwargs.get("model")))
        return None

    async def async_post_call_failure_deployment_hook(self, request_data: Any, exception: Exception,
                                                      call_type: Any,
                                                      fallback_depth: int | None = None) -> None:
        if (call := _CURRENT.get()) is not None:
            call.failed(exception)

    async def async_post_call_success_deployment_hook(self, request_data: dict, response: Any,
                                                      call_type: Any) -> Any:
        if (call := _CURRENT.get()) is not None:
            call.succeeded()
        return None


_ATTEMPT_LOG = _AttemptLog()


_PROVIDER_MEANINGS = {529: "overloaded"}  # Anthropic's overloaded_error, which litellm maps to 500


def describe(exc: BaseException) -> str:
    """An error as a short, secret-free phrase: its type and HTTP status, and the provider's own
    status where litellm mapped it to another (e.g. "provider overloaded (529)")."""
    status = getattr(exc, "status_code", None)
    provider = getattr(exc, "provider_status_code", None)
    if isinstance(provider, int) and provider != status:
        meaning = _PROVIDER_MEANINGS.get(provider, type(exc).__name__)
        return f"provider {meaning} ({provider})"
    return f"{type(exc).__name__}" + (f" ({status})" if isinstance(status, int) else "")


class LLM:
    def __init__(self, settings: Settings, budget: Budget | None = None) -> None:
        self.settings = settings
        faults = (FaultInjector(FaultPlan.parse(settings.offline_faults),
                                settings.offline_fault_seed) if settings.offline_faults else None)
        offline.register(settings.offline_latency_ms / 1000, faults)
        self.chains: dict[str, Chain] = chains(settings)
        self.unpriced = prices.check_models(  # raises SettingsError: a USD budget it cannot hold
            settings, (m for c in self.chains.values() for m in c.models))
        if _ATTEMPT_LOG not in litellm.callbacks:
            litellm.callbacks.append(_ATTEMPT_LOG)
        self.router = build_router(settings, self.chains)
        self._unpriced_logged: set[str] = set()
        self.budget = budget
        self.book: Books | None = None  # set by the Swarm: rows are written as calls return
        self.on_recovery: RecoveryListener | None = None

    def model_for(self, tier: str) -> str:
        return self.settings.model_for(tier)

    @property
    def offline(self) -> bool:
        return any(self.model_for(t).startswith(offline.PROVIDER + "/")
                   for t in ("planner", "worker", "fast"))

    def close(self) -> None:
        """Unhook the Router from litellm's global callbacks."""
        self.router.retire()

    async def complete(self, tier: str, messages: list[dict[str, Any]], ctx: CallContext, *,
                       tools: list[dict[str, Any]] | None = None,
                       response_format: type[BaseModel] | None = None) -> Completion:
        """One call to the tier's model group, retried, and walked to its fallbacks if any."""
        return await self._call(tier, self.chains[tier].groups[0], messages, ctx, tools=tools,
                                response_format=response_format)

    async def structured(self, tier: str, messages: list[dict[str, Any]], schema: type[T],
                         ctx: CallContext, *,
                         validate: Callable[[T], Iterable[str]] | None = None,
                         repair_attempts: int | None = None) -> T:
        """A call whose answer must parse as `schema` (and pass `validate`, if given). An invalid
        answer is re-asked with its errors, up to `repair_attempts` times per model; then the
        tier's next model gets the original question; then StructuredOutputError is raised."""
        repairs = self.settings.structured_repair_attempts if repair_attempts is None \
            else repair_attempts
        groups = self.chains[tier].groups
        errors: list[str] = []
        made = 0
        for g, group in enumerate(groups):
            convo = list(messages)
            for attempt in range(repairs + 1):
                made += 1
                completion = await self._call(tier, group, convo, ctx, response_format=schema)
                try:
                    value = schema.model_validate_json(_strip_fences(completion.content))
                    errors = list(validate(value)) if validate else []
                except ValidationError as exc:
                    errors = [f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}"
                              for e in exc.errors()[:10]]
                if not errors:
                    return value
                model = self.chains[tier].model_of(group)
                log.info("llm.invalid_structured tier=%s schema=%s model=%s attempt=%d errors=%d",
                         tier, schema.__name__, model, attempt + 1, len(errors))
                last = attempt == repairs
                if last and g + 1 == len(groups):
                    break
                nxt = self.chains[tier].model_of(groups[g + 1]) if last else model
                self._notify(ctx, Recovery(tier, model, f"invalid {schema.__name__}: {errors[0]}",
                                           "fallback" if last else "re-ask", nxt))
                convo += [{"role": "assistant", "content": completion.content[:4000]},
                          {"role": "user", "content": render("structured_repair",
                                                             schema=schema.__name__,
                                                             errors="\n".join(errors))}]
        raise StructuredOutputError(f"the {tier} model's answer was not a valid {schema.__name__} "
                                    f"after {made} attempts", errors, made)

    async def _call(self, tier: str, group: str, messages: list[dict[str, Any]], ctx: CallContext,
                    *, tools: list[dict[str, Any]] | None = None,
                    response_format: type[BaseModel] | None = None) -> Completion:
        reach = self.chains[tier].from_group(group)
        if self.settings.redact_prompts:  # a secret in a goal, a note or an answer stays here
            messages = redact_messages(messages)
        hold = await self.budget.reserve(ctx.objective_id, ctx.team_id, reach, messages, tools,
                                         response_format) \
            if self.budget is not None else None  # raises BudgetExceeded: nothing is sent
        kwargs: dict[str, Any] = {"max_tokens": self.settings.llm_max_tokens}
        if tools:
            kwargs["tools"] = tools
        if response_format is not None:
            kwargs["response_format"] = response_format
        call = _Call(tier, ctx, self._notify)
        token = _CURRENT.set(call if len(reach) > 1 else None)
        try:
            if len(reach) > 1:  # a fallback to walk: the Router's job, its hooks record attempts
                response = await self.router.acompletion(model=group, messages=cast(Any, messages),
                                                         **kwargs)
            else:
                response = await self._direct(reach[0], messages, kwargs, call)
        except BaseException as exc:  # a provider error after the Router's retries and
            if not isinstance(exc, Exception):  # fallbacks, or the step being cancelled
                call.failed(exc)
            rows = call.rows(None, reach[0])
            ctx.calls.extend(rows)
            self._book(rows, hold)  # no await: a cancelled step's calls are booked too
            if not isinstance(exc, Exception):
                raise
            log.warning("llm.call_failed tier=%s models=%s error=%s", tier, ",".join(reach),
                        describe(exc))
            raise LLMError(f"the {tier} model ({' → '.join(reach)}) failed: "
                           f"{describe(exc)}") from exc
        finally:
            _CURRENT.reset(token)
        rows = call.rows(response, reach[0])
        ctx.calls.extend(rows)
        for row in rows:
            if row.ok and row.cost is None and row.model not in self._unpriced_logged:
                self._unpriced_logged.add(row.model)  # the first call of each says so
                prices.unpriced_call(row.model, tier, ctx.objective_id)
        if self.budget is not None:
            self.budget.check_estimate(hold, sum((Usage(r.cost or 0.0, r.prompt_tokens
                                                        + r.completion_tokens) for r in rows),
                                                 Usage()))
        self._book(rows, hold)
        msg = response.choices[0].message
        calls = [ToolCall(tc.id, tc.function.name, _arguments(tc.function.arguments))
                 for tc in (msg.tool_calls or [])]
        return Completion(content=msg.content or "", tool_calls=calls,
                          message=msg.model_dump(exclude_none=True))

    async def _direct(self, model: str, messages: list[dict[str, Any]], kwargs: dict[str, Any],
                      call: _Call) -> Any:
        """A model with nothing to fall back to, called without the Router (which costs about
        as much CPU again as litellm's own call: bench/llm_cpu.py), retried as the Router
        would: after Retry-After on 429, with backoff on 5xx, timeouts and lost connections,
        never on a request the provider refused as wrong."""
        params: dict[str, Any] = {"model": model, "timeout": self.settings.llm_timeout_s,
                                  "max_retries": 0, "num_retries": 0, **kwargs}
        if base := self.settings.model_api_bases.get(model):
            params["api_base"] = base
        for attempt in range(self.settings.llm_retries + 1):
            call.start(model)
            try:
                response = await litellm.acompletion(messages=cast(Any, messages), **params)
            except Exception as exc:
                call.failed(exc)
                if attempt == self.settings.llm_retries or not retryable(exc):
                    raise
                await asyncio.sleep(retry_delay(exc, attempt))
                continue
            call.succeeded()
            return response
        raise AssertionError("unreachable")

    def _book(self, rows: list[LLMCall], hold: Hold | None) -> None:
        if self.book is not None:
            self.book.submit(rows, hold)
        elif self.budget is not None:
            self.budget.release(hold)

    def _notify(self, ctx: CallContext, recovery: Recovery) -> None:
        log.info("llm.recovering tier=%s model=%s problem=%s action=%s next=%s", recovery.tier,
                 recovery.model, recovery.problem, recovery.action, recovery.next_model)
        if self.on_recovery is not None:
            try:
                self.on_recovery(ctx, recovery)
            except Exception:  # showing a retry must never break the call
                log.exception("llm.recovery_listener_failed")


# What the Router's retry policy (swarm.llm.router) does not retry: the same request would fail
# the same way. ContextWindowExceeded and ContentPolicyViolation are BadRequestErrors.
_FINAL = (litellm.BadRequestError, litellm.AuthenticationError, litellm.NotFoundError,
          litellm.PermissionDeniedError, litellm.UnprocessableEntityError)
_MAX_RETRY_AFTER_S = 60.0


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, openai.APIError) and not isinstance(exc, _FINAL)


def retry_delay(exc: BaseException, attempt: int) -> float:
    """Retry-After when the provider sent one (seconds, capped), else 0.5 s doubling, jittered."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or \
        getattr(exc, "litellm_response_headers", None) or {}
    try:
        asked = float(headers.get("retry-after") or headers.get("Retry-After") or "")
    except (TypeError, ValueError):
        asked = -1.0
    if 0 <= asked <= _MAX_RETRY_AFTER_S:
        return asked
    return min(8.0, 0.5 * 2 ** attempt) * random.uniform(0.75, 1.0)


def _usage(row: LLMCall, response: Any) -> None:
    """Tokens as the provider reported them; cost from litellm's cost map (with the prices
    registered from settings), or None: unknown, never a silent 0."""
    usage = getattr(response, "usage", None)
    row.prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
    row.completion_tokens = getattr(usage, "completion_tokens", 0) or 0
    details = getattr(usage, "prompt_tokens_details", None)
    row.cached_tokens = getattr(details, "cached_tokens", 0) or 0
    if not prices.is_priced(row.model):  # litellm may still say 0.0 (ollama): that is a guess
        row.cost = None
        return
    cost = (getattr(response, "_hidden_params", {}) or {}).get("response_cost")
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response, model=row.model)
        except Exception:  # priced, yet litellm could not cost this answer: unknown, not 0
            cost = None
    row.cost = None if cost is None else float(cost)


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
