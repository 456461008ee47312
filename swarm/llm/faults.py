"""Fault injection for the offline model: litellm's own errors, drawn from a seeded RNG."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import httpx
import litellm

KINDS = ("429", "500", "timeout", "bad_json", "latency")
# What `threadswarm run --inject-faults` turns on: enough to see every kind of recovery.
DEMO_FAULTS = "429:0.1,500:0.1,timeout:0.05,bad_json:0.15,latency:0.1"
BAD_JSON = '{"approved": "maybe", "rationale": '
TIMEOUT_WAIT_S = 1.0  # an injected timeout waits this long (or the call's timeout, if shorter)
LATENCY_S = 1.0  # extra wait of an injected latency fault


class FaultSpecError(ValueError):
    """THREADSWARM_OFFLINE_FAULTS cannot be read; the message says how to write it."""


@dataclass(frozen=True)
class FaultPlan:
    rates: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        rates: list[tuple[str, float]] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, _, rate = part.partition(":")
            try:
                value = float(rate)
            except ValueError:
                value = -1.0
            if kind not in KINDS or not 0.0 <= value <= 1.0:
                raise FaultSpecError(f"cannot read fault {part!r}: write kind:rate pairs with "
                                     f"kinds {', '.join(KINDS)} and rates from 0 to 1, e.g. "
                                     f"{DEMO_FAULTS!r}")
            rates.append((kind, value))
        if sum(r for _, r in rates) > 1.0:
            raise FaultSpecError(f"the fault rates in {spec!r} add up to more than 1")
        return cls(tuple(rates))

    def describe(self) -> str:
        return ", ".join(f"{kind} {rate:.0%}" for kind, rate in self.rates)


class FaultInjector:
    """One draw per call: a fault kind or None. Errors are litellm's, so the Router handles
    them exactly as it would a provider's."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self.rng = random.Random(seed)

    def draw(self) -> str | None:
        roll, edge = self.rng.random(), 0.0
        for kind, rate in self.plan.rates:
            edge += rate
            if roll < edge:
                return kind
        return None

    async def before_call(self, model: str, timeout_s: float | None) -> str | None:
        """Raise or wait as the drawn fault says; returns "bad_json" when the answer must be
        corrupted (only structured calls care), else None."""
        kind = self.draw()
        if kind == "429":
            response = httpx.Response(429, headers={"retry-after": "1"},
                                      request=httpx.Request("POST", "http://offline.invalid"))
            raise litellm.RateLimitError("injected fault: rate limited", llm_provider="offline",
                                         model=model, response=response)
        if kind == "500":
            raise litellm.InternalServerError("injected fault: server error",
                                              llm_provider="offline", model=model)
        if kind == "timeout":
            await asyncio.sleep(min(TIMEOUT_WAIT_S, timeout_s or TIMEOUT_WAIT_S))
            raise litellm.Timeout("injected fault: no answer in time", model=model,
                                  llm_provider="offline")
        if kind == "latency":
            await asyncio.sleep(LATENCY_S)
        return "bad_json" if kind == "bad_json" else None
