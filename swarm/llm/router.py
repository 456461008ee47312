"""The litellm Router: a model group per tier, ordered fallbacks, retries, timeouts, cooldowns.

Tier `worker` with models [a, b, c] becomes the groups `worker` (a), `worker#1` (b) and
`worker#2` (c), with fallbacks worker -> [worker#1, worker#2] and worker#1 -> [worker#2]. So a
call to `worker` walks the whole chain, and a call to `worker#1` starts at the second model
(the structured-output layer does that after re-asking the first model has not helped).
Every group retries its model on 429 (after Retry-After), 5xx, timeouts and lost connections,
with litellm's exponential backoff. A model that keeps failing is skipped for a cool-down, but
only where there is a next model to go to: the last model of a chain is always tried.
A call that can reach one model only skips the Router (swarm.llm.client.LLM._direct).
"""
from __future__ import annotations

from dataclasses import dataclass

from litellm import Router
from litellm.types.router import AllowedFailsPolicy, RetryPolicy

from swarm.config import Settings

TIERS = ("planner", "worker", "fast")


def group_name(tier: str, index: int) -> str:
    return tier if index == 0 else f"{tier}#{index}"


@dataclass(frozen=True)
class Chain:
    """A tier's models in the order they are tried."""

    tier: str
    models: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(group_name(self.tier, i) for i in range(len(self.models)))

    def model_of(self, group: str) -> str:
        return self.models[self.groups.index(group)]

    def from_group(self, group: str) -> tuple[str, ...]:
        """The models a call to `group` may reach: that group's model and the ones after it."""
        return self.models[self.groups.index(group):]


def chains(settings: Settings) -> dict[str, Chain]:
    return {tier: Chain(tier, tuple(settings.models_for(tier))) for tier in TIERS}


def build_router(settings: Settings, tier_chains: dict[str, Chain]) -> Router:
    """The Router for `tier_chains` (custom providers, e.g. offline, must be registered)."""
    n = settings.llm_retries
    circuit = AllowedFailsPolicy(
        RateLimitErrorAllowedFails=settings.llm_allowed_fails,
        InternalServerErrorAllowedFails=settings.llm_allowed_fails,
        ServiceUnavailableErrorAllowedFails=settings.llm_allowed_fails,
        BadGatewayErrorAllowedFails=settings.llm_allowed_fails,
        TimeoutErrorAllowedFails=settings.llm_allowed_fails).model_dump(exclude_none=True)
    model_list: list[dict[str, object]] = []
    fallbacks: list[dict[str, list[str]]] = []
    for chain in tier_chains.values():
        for i, (group, model) in enumerate(zip(chain.groups, chain.models, strict=True)):
            params: dict[str, object] = {"model": model, "timeout": settings.llm_timeout_s}
            if base := settings.model_api_bases.get(model):
                params["api_base"] = base
            entry: dict[str, object] = {"model_name": group, "litellm_params": params}
            if i < len(chain.models) - 1:
                entry["model_info"] = {"allowed_fails_policy": circuit}
                fallbacks.append({group: list(chain.groups[i + 1:])})
            model_list.append(entry)
    # Client errors (400, 401, 404, content policy) are not retried: the same request would fail
    # the same way. Everything else the Router classifies (e.g. connection errors) gets n.
    policy = RetryPolicy(RateLimitErrorRetries=n, InternalServerErrorRetries=n,
                         ServiceUnavailableErrorRetries=n, TimeoutErrorRetries=n,
                         BadRequestErrorRetries=0, AuthenticationErrorRetries=0,
                         NotFoundErrorRetries=0, ContentPolicyViolationErrorRetries=0)
    return Router(model_list=model_list, fallbacks=fallbacks, num_retries=n,
                  retry_policy=policy, timeout=settings.llm_timeout_s,
                  cooldown_time=settings.llm_cooldown_s,
                  max_fallbacks=max(len(c.models) for c in tier_chains.values()))
