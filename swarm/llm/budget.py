"""Budgets: ceilings per objective and per team-month, checked before every call.

Before a call, its cost is estimated (prompt tokens by litellm.token_counter plus the whole
completion allowance, priced at the dearest model it may reach) and held while it is in flight:
a row in `budget_holds`, which the transaction writing the call's LLMCall rows deletes
(swarm.llm.calls), so a call counts as its estimate, then as its rows, never both and never
neither. A check adds spend in the database, every process's holds on the same objective tree
or team, and the new estimate, so parallel steps cannot all pass at once, in one process or in
several: the check and the hold are one write transaction, which SQLite's `BEGIN IMMEDIATE`
serialises and PostgreSQL serialises per team and per tree with advisory locks. A ceiling is
passed by at most what calls already in flight spend beyond their estimates. A hold outlives
no crash for long: it lapses once twice the longest its call may take (timeouts x attempts x
models) has passed, and at once when its owner is a process on this host that has exited.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import litellm
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Connection, bindparam, delete, insert, or_, select, text
from sqlalchemy.orm import Session

from swarm.config import Settings
from swarm.store import owners
from swarm.store.db import Database
from swarm.store.models import BudgetCeiling, BudgetHold, BudgetRequest, table, utcnow
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
    """One call's share of the budget while it is in flight: its `budget_holds` row."""

    id: int
    objective_id: int | None
    team_id: str | None
    estimate: Usage


_holds = table(BudgetHold)
_HOLD = insert(_holds).returning(_holds.c.id)
_RELEASE = delete(_holds).where(_holds.c.id.in_(bindparam("ids", expanding=True)))
_LAPSED = delete(_holds).where(_holds.c.expires_at <= bindparam("now"))
_LOCK = text("select pg_advisory_xact_lock(hashtext(:key))")
SWEEP_S = 60.0  # how often lapsed holds are deleted


def _live(s: Session, objective_ids: list[int], team_id: str | None,
          now: datetime) -> list[tuple[int | None, str | None, Usage]]:
    """Every process's live holds on these objectives or this team: not lapsed, and not of a
    process on this host that has exited."""
    whose: list[ColumnElement[bool]] = \
        [_holds.c.objective_id.in_(objective_ids)] if objective_ids else []
    whose += [] if team_id is None else [_holds.c.team_id == team_id]
    if not whose:
        return []
    rows = s.execute(select(_holds.c.owner, _holds.c.objective_id, _holds.c.team_id,
                            _holds.c.usd, _holds.c.tokens)
                     .where(or_(*whose), _holds.c.expires_at > now)).all()
    gone = {owner for owner in {r.owner for r in rows} if owners.gone(owner)}
    return [(r.objective_id, r.team_id, Usage(r.usd, r.tokens)) for r in rows
            if r.owner not in gone]


def _sum(holds: list[tuple[int | None, str | None, Usage]], *,
         objective_ids: list[int] | None = None, team_id: str | None = None) -> Usage:
    return sum((usage for oid, team, usage in holds
                if (objective_ids is not None and oid in objective_ids)
                or (team_id is not None and team == team_id)), Usage())


def release_in(c: Connection, holds: Iterable[Hold | None]) -> None:
    """Delete the holds in `c`'s transaction: the one that writes their calls' rows."""
    if ids := [h.id for h in holds if h is not None]:
        c.execute(_RELEASE, {"ids": ids})


OBJECTIVE_BUDGET, TEAM_BUDGET = "budget.objective", "budget.team"  # team settings' names


def objective_key(objective_id: int) -> str:
    return f"objective:{objective_id}"


def team_key(team_id: str, month: str) -> str:
    return f"team:{team_id}:{month}"


@dataclass
class Budget:
    settings: Settings
    db: Database
    owner: str = field(default_factory=owners.new_owner)  # this process's name on its holds
    _swept: float = field(default=float("-inf"), repr=False)  # time.monotonic() of the sweep

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

    async def reserve(self, objective_id: int | None, team_id: str | None,
                      models: tuple[str, ...], messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]] | None = None,
                      schema: type[BaseModel] | None = None) -> Hold | None:
        """Hold the call's estimate, or raise BudgetExceeded if it would pass a ceiling."""
        if objective_id is None and team_id is None:
            return None
        with self.db.read() as s:
            objective_default, team_default = self.defaults(s, team_id)
        if objective_default.unlimited and team_default.unlimited:
            return None
        estimate = self.estimate(models, messages, tools, schema)  # CPU: before the lock
        hold_s = 2 * self.settings.llm_timeout_s * (self.settings.llm_retries + 1) * len(models)

        def check_and_hold() -> Hold:
            with self.db.tx(wake=False) as s:
                tree = [] if objective_id is None else lineage(s, objective_id)
                self._lock(s, tree[-1:], team_id)
                now = self._sweep(s)
                # a team's call counts against its own share and every objective above it
                below = {oid: subtree(s, oid) for oid in tree}
                holds = _live(s, below[tree[-1]] if tree else [], team_id, now)
                for oid in tree:
                    key = objective_key(oid)
                    self._check(s, "objective", key, f"objective #{oid}"
                                + (" and its teams" if len(below[oid]) > 1 else ""),
                                self.ceiling(s, key, objective_default),
                                _usage(objective_spend(s, below[oid]))
                                + _sum(holds, objective_ids=below[oid]), estimate)
                if team_id is not None:
                    key = team_key(team_id, month_key(now))
                    self._check(s, "team", key, f"team {team_id}'s {month_key(now)} spend",
                                self.ceiling(s, key, team_default),
                                _usage(team_spend(s, team_id, month_start(now)))
                                + _sum(holds, team_id=team_id), estimate)
                hold_id = s.execute(_HOLD, {
                    "objective_id": objective_id, "team_id": team_id, "usd": estimate.usd,
                    "tokens": estimate.tokens, "owner": self.owner, "created_at": now,
                    "expires_at": now + timedelta(seconds=hold_s)}).scalar_one()
            return Hold(hold_id, objective_id, team_id, estimate)

        return await self.db.retrying(check_and_hold, "budget.hold")

    def check_estimate(self, hold: Hold | None, actual: Usage) -> None:
        if hold is not None and (actual.tokens > hold.estimate.tokens
                                 or actual.usd > hold.estimate.usd + 1e-12):
            log.warning("budget.estimate_exceeded objective=%s estimate=%s actual=%s",
                        hold.objective_id, hold.estimate.show(), actual.show())

    def release(self, hold: Hold | None) -> None:
        """For a call whose rows are not written (no book): its hold goes at once. A failure
        leaves the hold to lapse."""
        if hold is None:
            return
        try:
            with self.db.core(wake=False) as c:
                release_in(c, [hold])
        except Exception as exc:
            log.warning("budget.release_failed hold=%d error=%s", hold.id, type(exc).__name__)

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
        used = _usage(objective_spend(s, tree)) + _sum(_live(s, tree, None, utcnow()),
                                                       objective_ids=tree)
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
    def _lock(self, s: Session, roots: list[int], team_id: str | None) -> None:
        """PostgreSQL: take turns with every other check of this team and objective tree (in
        one order, so two checks never wait on each other). SQLite's write lock does that."""
        if self.db.sqlite:
            return
        for key in sorted([f"budget:team:{team_id}"] * (team_id is not None)
                          + [f"budget:tree:{root}" for root in roots]):
            s.execute(_LOCK, {"key": key})

    def _sweep(self, s: Session) -> datetime:
        """Delete lapsed holds now and then (they count for nothing already); returns now."""
        now = utcnow()
        if (tick := time.monotonic()) - self._swept > SWEEP_S:
            s.execute(_LAPSED, {"now": now})
            self._swept = tick
        return now

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
