"""GET /metrics: the swarm's figures for Prometheus, read from the database at each scrape.

Every figure is a query, not a counter kept in process memory: with several web replicas,
workers and a clock on one database, any replica's scrape shows the whole deployment, and a
restart loses nothing. The queries are aggregates over indexed columns or over a bounded
window of recent rows (RECENT), so a scrape stays cheap as the tables grow.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarm.states import ApprovalState, ObjectiveState, RunState
from swarm.store.db import Database
from swarm.store.models import (
    Approval,
    GroundingCheck,
    LLMCall,
    Objective,
    OutboxEvent,
    StepRun,
    utcnow,
)

RECENT = 1000  # lag and wait quantiles are over the latest this many deliveries / decisions
QUANTILES = (0.5, 0.99)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of values sorted ascending (not empty)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _seconds(pairs: Iterable[Any]) -> list[float]:
    return sorted(max(0.0, (end - start).total_seconds()) for start, end in pairs)


class SwarmCollector(Collector):
    """Objectives and step runs by state, LLM calls, tokens and cost, outbox lag, approval
    wait, drift checks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as s:
            yield from self._states(s)
            yield from self._llm(s)
            yield from self._outbox(s)
            yield from self._approvals(s)
            yield from self._drift(s)

    @staticmethod
    def _by_state(s: Session, column: object, states: Iterable[str]) -> dict[str, int]:
        counts = dict.fromkeys(states, 0)
        counts.update({str(k): int(n) for k, n in s.execute(
            select(column, func.count()).group_by(column))})  # type: ignore[call-overload]
        return counts

    def _states(self, s: Session) -> Iterator[Metric]:
        objectives = GaugeMetricFamily("threadswarm_objectives", "Objectives by state.",
                                       labels=["state"])
        for state, n in self._by_state(s, Objective.state, ObjectiveState).items():
            objectives.add_metric([state], n)
        yield objectives
        runs = GaugeMetricFamily("threadswarm_step_runs", "Step runs (attempts) by state.",
                                 labels=["state"])
        for state, n in self._by_state(s, StepRun.state, RunState).items():
            runs.add_metric([state], n)
        yield runs

    @staticmethod
    def _llm(s: Session) -> Iterator[Metric]:
        calls = CounterMetricFamily("threadswarm_llm_calls", "Model calls made.",
                                    labels=["tier", "outcome"])
        tokens = CounterMetricFamily("threadswarm_llm_tokens", "Tokens used by model calls.",
                                     labels=["tier", "kind"])
        cost = CounterMetricFamily("threadswarm_llm_cost_usd", "What model calls cost (USD; "
                                   "calls to a model without a price count 0).", labels=["tier"])
        rows = s.execute(select(
            LLMCall.tier, LLMCall.ok, func.count(), func.sum(LLMCall.prompt_tokens),
            func.sum(LLMCall.completion_tokens), func.sum(LLMCall.cached_tokens),
            func.sum(LLMCall.cost)).group_by(LLMCall.tier, LLMCall.ok))
        totals: dict[str, list[float]] = {}
        for tier, ok, n, prompt, completion, cached, usd in rows:
            calls.add_metric([tier, "ok" if ok else "error"], n)
            acc = totals.setdefault(tier, [0, 0, 0, 0.0])
            for i, v in enumerate((prompt, completion, cached, usd)):
                acc[i] += v or 0
        for tier, acc in sorted(totals.items()):
            for kind, value in zip(("prompt", "completion", "cached"), acc, strict=False):
                tokens.add_metric([tier, kind], value)
            cost.add_metric([tier], acc[3])
        yield from (calls, tokens, cost)

    @staticmethod
    def _outbox(s: Session) -> Iterator[Metric]:
        now = utcnow()
        is_open = (OutboxEvent.delivered_at.is_(None), OutboxEvent.dead_at.is_(None))
        open_rows, oldest = s.execute(select(func.count(), func.min(OutboxEvent.created_at))
                                      .where(*is_open)).one()
        dead = s.scalar(select(func.count()).where(OutboxEvent.dead_at.is_not(None)))
        yield GaugeMetricFamily("threadswarm_outbox_open", "Outbox rows not yet delivered.",
                                value=open_rows)
        yield GaugeMetricFamily("threadswarm_outbox_dead", "Outbox rows given up on (kept "
                                "for inspection).", value=dead or 0)
        yield GaugeMetricFamily("threadswarm_outbox_oldest_open_age_seconds",
                                "How long the oldest undelivered row has waited (0: none).",
                                value=(now - oldest).total_seconds() if oldest else 0.0)
        lags = _seconds(s.execute(
            select(OutboxEvent.created_at, OutboxEvent.delivered_at)
            .where(OutboxEvent.delivered_at.is_not(None))
            .order_by(OutboxEvent.delivered_at.desc()).limit(RECENT)).all())
        lag = GaugeMetricFamily("threadswarm_outbox_delivery_lag_seconds",
                                f"From a row's write to its delivery, over the latest {RECENT} "
                                "deliveries.", labels=["quantile"])
        for q in QUANTILES if lags else ():
            lag.add_metric([str(q)], quantile(lags, q))
        yield lag

    @staticmethod
    def _approvals(s: Session) -> Iterator[Metric]:
        now = utcnow()
        pending, oldest = s.execute(select(func.count(), func.min(Approval.requested_at))
                                    .where(Approval.state == ApprovalState.PENDING)).one()
        yield GaugeMetricFamily("threadswarm_approvals_pending", "Approvals awaiting a human.",
                                value=pending)
        yield GaugeMetricFamily("threadswarm_approval_oldest_pending_age_seconds",
                                "How long the oldest pending approval has waited (0: none).",
                                value=(now - oldest).total_seconds() if oldest else 0.0)
        waits = _seconds(s.execute(
            select(Approval.requested_at, Approval.decided_at)
            .where(Approval.decided_at.is_not(None))
            .order_by(Approval.decided_at.desc()).limit(RECENT)).all())
        wait = GaugeMetricFamily("threadswarm_approval_wait_seconds",
                                 f"From an approval's request to its decision, over the latest "
                                 f"{RECENT} decisions.", labels=["quantile"])
        for q in QUANTILES if waits else ():
            wait.add_metric([str(q)], quantile(waits, q))
        yield wait

    @staticmethod
    def _drift(s: Session) -> Iterator[Metric]:
        checks = CounterMetricFamily("threadswarm_drift_checks", "Grounding checks made, by "
                                     "what decided them and their verdict.",
                                     labels=["signal", "verdict"])
        for signal, aligned, n in s.execute(
                select(GroundingCheck.signal, GroundingCheck.aligned, func.count())
                .group_by(GroundingCheck.signal, GroundingCheck.aligned)):
            checks.add_metric([signal, "aligned" if aligned else "drifted"], n)
        yield checks


def registry(db: Database) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): one per server."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SwarmCollector(db))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
