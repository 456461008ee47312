"""A team's administration: its admins, approvers, budgets, memory and audit trail. Every
method takes the Principal who asks and checks it here, so no edge can forget to."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from swarm.config import Settings
from swarm.contract import Decision, Principal
from swarm.llm.budget import OBJECTIVE_BUDGET, TEAM_BUDGET, Budget, Ceiling
from swarm.redact import redact
from swarm.services.policy import Policy, admin_refusal
from swarm.store import team
from swarm.store.audit import ChainReport, audit, verify_chain
from swarm.store.db import Database
from swarm.store.models import AuditEntry, Objective, utcnow
from swarm.store.spend import Spend, month_key, month_start, team_spend

SCOPES = {"objective": OBJECTIVE_BUDGET, "team": TEAM_BUDGET}


@dataclass(frozen=True)
class BudgetView:
    objective: Ceiling
    team: Ceiling
    month: str
    month_spend: Spend


@dataclass(frozen=True)
class AuditLine:
    id: int
    at: str
    actor: str
    action: str
    detail: dict[str, Any]


class TeamAdmin:
    """`swarm.team`: what `/swarm budget|approvers|admins|memory|audit` do."""

    def __init__(self, settings: Settings, db: Database, policy: Policy, budget: Budget,
                 memory: Callable[[], Any]) -> None:
        self.settings, self.db, self.policy, self.budget = settings, db, policy, budget
        self._memory = memory  # the swarm's team memory (None when off), read when used

    def _refuse(self, who: Principal, what: str, action: str) -> Decision | None:
        """None when `who` is an admin; else the refusal, audited."""
        with self.db.tx() as s:
            if self.policy.is_admin(s, who):
                return None
            audit(s, who.user, "admin.refused", None, where=who.where, command=action)
        return Decision(False, admin_refusal(what))

    def is_admin(self, who: Principal) -> bool:
        with self.db.read() as s:
            return self.policy.is_admin(s, who)

    # -- admins and approvers ----------------------------------------------------------------
    def members(self, who: Principal, role: str) -> list[str]:
        """The team's admins or approvers: those stored, then the settings' (read-only)."""
        configured = self.settings.admins if role == "admin" else \
            self.settings.approvers
        with self.db.read() as s:
            stored = team.members(s, who.team_id, role)
        return stored + [u for u in configured if u not in stored]

    def add_member(self, who: Principal, role: str, user: str) -> Decision:
        return self._change_member(who, role, user, add=True)

    def remove_member(self, who: Principal, role: str, user: str) -> Decision:
        return self._change_member(who, role, user, add=False)

    def _change_member(self, who: Principal, role: str, user: str, *, add: bool) -> Decision:
        assert role in team.ROLES
        verb = "add" if add else "remove"
        if (refused := self._refuse(who, f"{verb} {role}s", f"{role}s.{verb}")) is not None:
            return refused
        with self.db.tx() as s:
            if add:
                done = team.add_member(s, who.team_id, role, user, who.user)
            else:
                done = team.remove_member(s, who.team_id, role, user)
            if not done:
                had = "already" if add else "not"
                return Decision(False, f"{user} is {had} one of this team's {role}s."
                                + (" (Settings name some too; those change in the "
                                   "environment.)" if not add and user in self.members(
                                       who, role) else ""))
            audit(s, who.user, f"{role}s.{'added' if add else 'removed'}", None,
                  where=who.where, user=user)
        return Decision(True, f"{user} {'is now' if add else 'is no longer'} one of this "
                              f"team's {role}s.")

    # -- budgets -----------------------------------------------------------------------------
    def budgets(self, who: Principal) -> BudgetView:
        now = utcnow()
        with self.db.read() as s:
            objective, per_team = self.budget.defaults(s, who.team_id)
            spent = team_spend(s, who.team_id, month_start(now))
        return BudgetView(objective, per_team, month_key(now), spent)

    def set_budget(self, who: Principal, scope: str, *, usd: float | None | bool = False,
                   tokens: int | None | bool = False) -> Decision:
        """Set one dimension of a ceiling (None: no ceiling; False: leave it as it is)."""
        name = SCOPES[scope]
        if (refused := self._refuse(who, "change the budget", "budget.set")) is not None:
            return refused
        with self.db.tx() as s:
            objective, per_team = self.budget.defaults(s, who.team_id)
            current = objective if scope == "objective" else per_team
            new = Ceiling(current.usd if usd is False else usd,  # type: ignore[arg-type]
                          current.tokens if tokens is False else tokens)  # type: ignore[arg-type]
            team.put_setting(s, who.team_id, name, {"usd": new.usd, "tokens": new.tokens},
                             who.user)
            audit(s, who.user, "budget.set", None, where=who.where, scope=scope,
                  before={"usd": current.usd, "tokens": current.tokens},
                  after={"usd": new.usd, "tokens": new.tokens})
        label = "each objective's" if scope == "objective" else "the team's monthly"
        return Decision(True, f"Budget set: {label} ceiling is now {new.show()}.")

    # -- memory ------------------------------------------------------------------------------
    async def remember(self, who: Principal, text: str) -> Decision:
        memory = self._memory()
        if memory is None:
            return Decision(False, "Team memory is not enabled here.")
        text = redact(text.strip())
        try:
            memory_id = await memory.remember(who.team_id, text, kind="note", author=who.user)
        except ValueError as exc:
            return Decision(False, f"Not remembered: {exc}")
        with self.db.tx() as s:
            audit(s, who.user, "memory.remembered", None, where=who.where, memory=memory_id)
        return Decision(True, f"Remembered #{memory_id}.")

    async def forget(self, who: Principal, memory_id: int) -> Decision:
        if (refused := self._refuse(who, "forget memories", "memory.forget")) is not None:
            return refused
        memory = self._memory()
        if memory is None:
            return Decision(False, "Team memory is not enabled here.")
        if not await memory.forget(who.team_id, memory_id):
            return Decision(False, f"This team has no memory #{memory_id} (`memory list`).")
        with self.db.tx() as s:
            audit(s, who.user, "memory.forgot", None, where=who.where, memory=memory_id)
        return Decision(True, f"Forgot #{memory_id}.")

    # -- audit -------------------------------------------------------------------------------
    def trail(self, who: Principal, objective_id: int) -> list[AuditLine] | None:
        """An objective's audit entries, oldest first; None if it is not this team's."""
        with self.db.read() as s:
            obj = s.get(Objective, objective_id)
            if obj is None or obj.team_id != who.team_id:
                return None
            return [AuditLine(e.id, e.at, e.actor, e.action, e.detail) for e in s.scalars(
                select(AuditEntry).where(AuditEntry.objective_id == objective_id)
                .order_by(AuditEntry.id))]

    def verify(self) -> ChainReport:
        with self.db.read() as s:
            return verify_chain(s)
