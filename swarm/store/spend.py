"""Spend read models: tokens and cost summed per step, objective, team and day."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select
from sqlalchemy.orm import Session

from swarm.store.models import LLMCall


@dataclass(frozen=True)
class Spend:
    calls: int = 0
    failed: int = 0  # attempts that reached a provider and failed (429, 5xx, timeout...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0  # of the priced calls only
    unpriced: int = 0  # answered calls of a model with no price: their cost is unknown

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def show_cost(self) -> str:
        """The cost, never a silent $0.00: unknown, or a lower bound, when calls were unpriced."""
        if not self.unpriced:
            return f"${self.cost:.4f}"
        calls = f"{self.unpriced} call{'s' if self.unpriced != 1 else ''} unpriced"
        if self.calls - self.failed - self.unpriced <= 0 and not self.cost:
            return f"unknown ({calls})"
        return f"≥ ${self.cost:.4f} ({calls})"


_COLUMNS = (func.count(LLMCall.id),
            func.coalesce(func.sum(case((LLMCall.ok.is_(False), 1), else_=0)), 0),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0),
            func.coalesce(func.sum(LLMCall.cached_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost), 0.0),
            func.coalesce(func.sum(case((LLMCall.cost.is_(None), 1), else_=0)), 0))
# prebuilt: finishing an objective reads it, and building the statement each time showed
_BY_STEP = (select(LLMCall.step_id, *_COLUMNS).where(LLMCall.objective_id == bindparam("oid"))
            .group_by(LLMCall.step_id))
_FIELDS = ("calls", "failed", "prompt_tokens", "completion_tokens", "cached_tokens", "cost",
           "unpriced")


def _spend(row: Any) -> Spend:
    calls, failed, prompt, completion, cached, cost, unpriced = row
    return Spend(int(calls), int(failed), int(prompt), int(completion), int(cached), float(cost),
                 int(unpriced))


def _one(s: Session, query: Select[Any]) -> Spend:
    return _spend(s.execute(query).one())


def objective_spend(s: Session, objective_id: int | list[int]) -> Spend:
    """One objective's spend, or several's together (an objective and its teams)."""
    if isinstance(objective_id, list):
        return _one(s, select(*_COLUMNS).where(LLMCall.objective_id.in_(objective_id)))
    return _one(s, select(*_COLUMNS).where(LLMCall.objective_id == objective_id))


def step_spend(s: Session, objective_id: int, *,
               with_totals: bool = False) -> dict[int | None, Spend]:
    """Spend per step of the objective; with_totals adds the objective's total under None
    (planning and other calls of no step included), from the same one query."""
    rows = s.execute(_BY_STEP, {"oid": objective_id})
    by_step: dict[int | None, Spend] = {r[0]: _spend(r[1:]) for r in rows}
    if with_totals:
        parts = list(by_step.values())
        by_step = {k: v for k, v in by_step.items() if k is not None}
        by_step[None] = Spend(*(sum(getattr(p, f) for p in parts) for f in _FIELDS))
    else:
        by_step.pop(None, None)
    return by_step


def month_start(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_key(at: datetime) -> str:
    return at.strftime("%Y-%m")


def team_spend(s: Session, team_id: str, since: datetime) -> Spend:
    return _one(s, select(*_COLUMNS).where(LLMCall.team_id == team_id,
                                           LLMCall.created_at >= since))


def objectives_spend(s: Session, objective_ids: Select[Any], since: datetime) -> Spend:
    """What the objectives `objective_ids` (a subquery, e.g. one channel's) spent since."""
    return _one(s, select(*_COLUMNS).where(LLMCall.objective_id.in_(objective_ids),
                                           LLMCall.created_at >= since))


@dataclass(frozen=True)
class TeamDay:
    team_id: str
    day: str  # YYYY-MM-DD, UTC
    spend: Spend


def daily_spend(s: Session, since: datetime, team_id: str | None = None) -> list[TeamDay]:
    """Spend per team and UTC day since `since`, newest day first."""
    day = func.date(LLMCall.created_at)
    query = (select(LLMCall.team_id, day, *_COLUMNS).where(LLMCall.created_at >= since)
             .group_by(LLMCall.team_id, day).order_by(day.desc(), LLMCall.team_id))
    if team_id is not None:
        query = query.where(LLMCall.team_id == team_id)
    return [TeamDay(r[0] or "-", str(r[1])[:10], _spend(r[2:])) for r in s.execute(query)]
