"""Budgets: ceilings per objective and per team-month, checked before every call.

Before a call, its cost is estimated (prompt tokens by litellm.token_counter plus the whole
completion allowance, priced at the dearest model it may reach) and held while it is in flight;
whoever writes the call's LLMCall rows releases the hold once they are committed (swarm.llm.calls),
so a call counts as its estimate, then as its rows, never both for long and never neither. A
check adds spend in the database, every hold of the same objective or team, and the new
estimate, so parallel steps cannot all pass at once: a ceiling is passed by at most what calls
already in flight spend beyond their estimates. The checks run in the event loop without
awaiting, so within one process they are atomic; holds are this process's own (another
process sees only the rows its calls have written).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import litellm
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarm.config import Settings
from swarm.store.db import Database
from swarm.store.models import BudgetCeiling, BudgetRequest, utcnow
from swarm.store.spend import Spend, month_key, month_start, objective_spend, team_spend
from swarm.store.team import setting
from swarm.store.tree import lineage, subtree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    usd: float = 0.0
    tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.usd + other.usd, self.tokens + other.tokens)

    def show(self) -> str:
        return f"${self.usd:.4f} / {self.tokens:,} tokens"


@dataclass(frozen=True)
class Ceiling:
    usd: float | None = None
    tokens: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.usd is None and self.tokens is None

    def passed_by(self, total: Usage) -> bool:
        return (self.usd is not None and total.usd > self.usd + 1e-12) or \
            (self.tokens is not None and total.tokens > self.tokens)

    def raised(self, factor: float, needed: Usage) -> Ceiling:
        """Every set dimension times `factor`, and at least what the waiting call needs."""
        return Ceiling(None if self.usd is None else max(self.usd * factor, needed.usd),
                       None if self.tokens is None else
                       int(max(self.tokens * factor, needed.tokens)))

    def show(self) -> str:
        parts = ([] if self.usd is None else [f"${self.usd:.4f}"]) + \
            ([] if self.tokens is None else [f"{self.tokens:,} tokens"])
        return " / ".join(parts) or "no limit"


class BudgetExceeded(RuntimeError):
    """A call would pass a ceiling; it was not made. The message is safe to show."""

    def __init__(self, scope: str, key: str, label: str, ceiling: Ceiling, used: Usage,
                 estimate: Usage) -> None:
        self.scope, self.key, self.label = scope, key, label
        self.ceiling, self.used, self.estimate = ceiling, used, estimate
        super().__init__(f"the next call (about {estimate.show()}) would take {label} past its "
                         f"budget of {ceiling.show()}: {used.show()} already spent or in flight")


@dataclass(eq=False)
class Hold:
    """One call's share of the budget while it is in flight and its rows are not written."""

    objective_id: int | None
    team_id: str | None
    estimate: Usage


OBJECTIVE_BUDGET, TEAM_BUDGET = "budget.objective", "budget.team"  # team settings' names


def objective_key(objective_id: int) -> str:
    return f"objective:{objective_id}"


def team_key(team_id: str, month: str) -> str:
    return f"team:{team_id}:{month}"


@dataclass
class Budget:
    settings: Settings
    db: Database
    holds: list[Hold] = field(default_factory=list)

    @property
    def objective_default(self) -> Ceiling:
        return Ceiling(self.settings.objective_budget_usd, self.settings.objective_budget_tokens)

    @property
    def team_default(self) -> Ceiling:
        return Ceiling(self.settings.team_monthly_budget_usd,
                       self.settings.team_monthly_budget_tokens)

    def defaults(self, s: Session, team_id: str | None) -> tuple[Ceiling, Ceiling]:
        """A team's ceilings per objective and per month: its own (`/swarm budget set`, kept
        in the database) where it set one, else the settings'."""
        objective, team = self.objective_default, self.team_default
        if team_id is not None:
            if (own := setting(s, team_id, OBJECTIVE_BUDGET)) is not None:
                objective = Ceiling(own.get("usd"), own.get("tokens"))
            if (own := setting(s, team_id, TEAM_BUDGET)) is not None:
                team = Ceiling(own.get("usd"), own.get("tokens"))
        return objective, team

    # -- before and after a call -----------------------------------------------------------
    def estimate(self, models: tuple[str, ...], messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None, schema: type[BaseModel] | None) -> Usage:
        extra = [{"role": "system", "content": json.dumps(schema.model_json_schema())}] \
            if schema is not None else []
        try:
            prompt = litellm.token_counter(model=models[0], messages=messages + extra,
                                           tools=tools)  # type: ignore[arg-type]
        except Exception:  # an odd message shape: count characters instead (~4 per token)
            prompt = len(json.dumps(messages + extra, default=str)) // 4 + 1
        completion = self.settings.llm_max_tokens
        return Usage(max((_price(m, prompt, completion) for m in models), default=0.0),
                     prompt + completion)

    def reserve(self, objective_id: int | None, team_id: str | None, models: tuple[str, ...],
                messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                schema: type[BaseModel] | None = None) -> Hold | None:
        """Hold the call's estimate, or raise BudgetExceeded if it would pass a ceiling."""
        if objective_id is None and team_id is None:
            return None
        with self.db.read() as s:
            objective_default, team_default = self.defaults(s, team_id)
            if objective_default.unlimited and team_default.unlimited:
                return None
            estimate = self.estimate(models, messages, tools, schema)
            # a team's call counts against its own share and against every objective above it
            for oid in [] if objective_id is None else lineage(s, objective_id):
                key, tree = objective_key(oid), subtree(s, oid)
                self._check(s, "objective", key, f"objective #{oid}"
                            + (" and its teams" if len(tree) > 1 else ""),
                            self.ceiling(s, key, objective_default),
                            _usage(objective_spend(s, tree)) + self._held(objective_ids=tree),
                            estimate)
            if team_id is not None:
                now = utcnow()
                key = team_key(team_id, month_key(now))
                self._check(s, "team", key, f"team {team_id}'s {month_key(now)} spend",
                            self.ceiling(s, key, team_default),
                            _usage(team_spend(s, team_id, month_start(now)))
                            + self._held(team_id=team_id), estimate)
        hold = Hold(objective_id, team_id, estimate)
        self.holds.append(hold)
        return hold

    def check_estimate(self, hold: Hold | None, actual: Usage) -> None:
        if hold is not None and (actual.tokens > hold.estimate.tokens
                                 or actual.usd > hold.estimate.usd + 1e-12):
            log.warning("budget.estimate_exceeded objective=%s estimate=%s actual=%s",
                        hold.objective_id, hold.estimate.show(), actual.show())

    def release(self, hold: Hold | None) -> None:
        """Called by whoever wrote the call's rows, once they are committed."""
        if hold is not None and hold in self.holds:
            self.holds.remove(hold)

    # -- ceilings ----------------------------------------------------------------------------
    def carve(self, s: Session, parent_id: int, child_id: int,
              team_id: str | None = None) -> Ceiling | None:
        """Give a new team (objective `child_id`) its share of what its parent has left (spent
        and in flight counted, the parent's other teams included): its own ceiling, within the
        parent's. `team_id` is the workspace's, whose own defaults apply."""
        parent = self.ceiling(s, objective_key(parent_id), self.defaults(s, team_id)[0])
        if parent.unlimited:
            return None
        tree = subtree(s, parent_id)
        used = _usage(objective_spend(s, tree)) + self._held(objective_ids=tree)
        share = self.settings.team_budget_share
        carved = Ceiling(None if parent.usd is None else max(0.0, (parent.usd - used.usd) * share),
                         None if parent.tokens is None else
                         max(0, int((parent.tokens - used.tokens) * share)))
        s.add(BudgetCeiling(key=objective_key(child_id), usd=carved.usd, tokens=carved.tokens))
        return carved

    def ceiling(self, s: Session, key: str, default: Ceiling) -> Ceiling:
        row = s.scalar(select(BudgetCeiling).where(BudgetCeiling.key == key))
        return default if row is None else Ceiling(row.usd, row.tokens)

    def request_raise(self, s: Session, exc: BudgetExceeded, objective_id: int, approval_id: int,
                      resume_to: str) -> Ceiling:
        """Record what approving `approval_id` will do; returns the proposed ceiling."""
        proposed = exc.ceiling.raised(self.settings.budget_raise_factor, exc.used + exc.estimate)
        s.add(BudgetRequest(approval_id=approval_id, objective_id=objective_id, key=exc.key,
                            usd=proposed.usd, tokens=proposed.tokens, resume_to=resume_to))
        return proposed

    def apply_raise(self, s: Session, approval_id: int) -> BudgetRequest | None:
        """Raise the ceiling an approved request names (never lower one raised since)."""
        request = s.scalar(select(BudgetRequest).where(BudgetRequest.approval_id == approval_id))
        if request is None:
            return None
        row = s.scalar(select(BudgetCeiling).where(BudgetCeiling.key == request.key)
                       .with_for_update())
        if row is None:
            row = BudgetCeiling(key=request.key)
            s.add(row)
        row.usd = _higher(row.usd, request.usd)
        row.tokens = _higher(row.tokens, request.tokens)
        return request

    # -- internals ---------------------------------------------------------------------------
    def _held(self, *, objective_ids: list[int] | None = None,
              team_id: str | None = None) -> Usage:
        return sum((h.estimate for h in self.holds
                    if (objective_ids is not None and h.objective_id in objective_ids)
                    or (team_id is not None and h.team_id == team_id)), Usage())

    @staticmethod
    def _check(s: Session, scope: str, key: str, label: str, ceiling: Ceiling, used: Usage,
               estimate: Usage) -> None:
        if ceiling.passed_by(used + estimate):
            log.info("budget.exceeded scope=%s key=%s used=%s estimate=%s", scope, key,
                     used.show(), estimate.show())
            raise BudgetExceeded(scope, key, label, ceiling, used, estimate)


def _usage(spend: Spend) -> Usage:
    return Usage(spend.cost, spend.tokens)


def _higher(current: float | int | None, proposed: Any) -> Any:
    if current is None or proposed is None:
        return proposed if current is None else current
    return max(current, proposed)


def _price(model: str, prompt: int, completion: int) -> float:
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt, completion_tokens=completion)
    except Exception:  # a model with no price in litellm's cost map: only tokens can be held
        return 0.0
    return float(prompt_cost + completion_cost)
