"""SQLAlchemy 2.0 models: objectives, plans, steps, runs, approvals, questions, outbox, audit."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swarm.contract import ThreadRef


def utcnow() -> datetime:
    """Naive UTC: SQLite and PostgreSQL then store and return the same value."""
    return datetime.now(UTC).replace(tzinfo=None)


# Every constraint gets a name: a migration can then drop or alter it by that name, on SQLite
# (whose batch mode recreates a table with its named constraints) as on PostgreSQL. memory/tables.py
# has the same one (importing memory would load numpy here); tests/test_migrations.py compares them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def table(model: type[Base]) -> Table:
    """A model's Table, for prebuilt Core statements."""
    return cast(Table, model.__table__)


class Objective(Base):
    __tablename__ = "objectives"
    # a reply or a mention finds its thread's objectives by these four
    __table_args__ = (Index("ix_objectives_thread", "platform", "team_id", "channel_id",
                            "thread_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    goal: Mapped[str] = mapped_column(Text)
    platform: Mapped[str] = mapped_column(String(32))
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    channel_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    plan_version: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[str | None] = mapped_column(Text, default=None)
    # A team's objective: the step of the parent that it does (unique: one team per step, so two
    # processes, or a restart, never start a second), its root, and how deep it nests.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("objectives.id"), index=True,
                                                  default=None)
    parent_step_id: Mapped[int | None] = mapped_column(Integer, unique=True, default=None)
    root_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    @property
    def thread(self) -> ThreadRef:
        return ThreadRef(self.platform, self.team_id, self.channel_id, self.thread_id)


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("objective_id", "plan_version", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    plan_version: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(64))
    instructions: Mapped[str] = mapped_column(Text)
    depends_on: Mapped[list[Any]] = mapped_column(default=list)
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    team: Mapped[bool] = mapped_column(Boolean, default=False)  # done by a team of its own
    state: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # While running, the step is owned by one claim: its token guards every write of that run,
    # its owner and expiry let another process take over only once the owner stopped renewing.
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class StepRun(Base):
    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("step_id", "attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    output: Mapped[str | None] = mapped_column(Text, default=None)
    approved: Mapped[bool | None] = mapped_column(Boolean, default=None)
    critique: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class LLMCall(Base):
    """One attempt that reached a provider: tokens and cost as the provider reported them."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_team_created", "team_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    step_id: Mapped[int | None] = mapped_column(Integer, default=None)
    run_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    team_id: Mapped[str | None] = mapped_column(String(64), default=None)
    tier: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float | None] = mapped_column(Float, default=0.0)  # None: model has no price
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Intervention(Base):
    """A troubleshooter decision on a failed step: retry, replan or ask the humans."""

    __tablename__ = "interventions"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer)  # the step's attempts when it was decided
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BudgetCeiling(Base):
    """An objective's or a team-month's own ceiling, once raised above the settings."""

    __tablename__ = "budget_ceilings"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)  # objective:12 | team:T1:2025-06
    usd: Mapped[float | None] = mapped_column(Float, default=None)  # None: no ceiling
    tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class BudgetHold(Base):
    """A model call's estimate while it is in flight and its llm_calls rows are not written:
    every process's budget check counts it. Deleted in the transaction that writes the rows;
    lapses at `expires_at`, or at once when `owner` is a process on this host that has exited."""

    __tablename__ = "budget_holds"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    team_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    usd: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BudgetRequest(Base):
    """What approving a "budget" approval does: raise one ceiling, resume one objective."""

    __tablename__ = "budget_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"), unique=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    key: Mapped[str] = mapped_column(String(120))
    usd: Mapped[float | None] = mapped_column(Float, default=None)  # the ceiling it proposes
    tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    resume_to: Mapped[str] = mapped_column(String(32))  # planning | running
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Approval(Base):
    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(128), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    # An approval binds to what it showed: a step approval to the digest of the step's role
    # and instructions, a plan approval to the plan version ("plan:v3").
    binding: Mapped[str | None] = mapped_column(String(64), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class TeamMember(Base):
    """A user a team named an admin or an approver (`/swarm admins add`, `approvers add`)."""

    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("team_id", "role", "user"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | approver
    user: Mapped[str] = mapped_column(String(128))
    added_by: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TeamSetting(Base):
    """A team's own setting, changed by a command: budgets, digests. Survives restarts."""

    __tablename__ = "team_settings"
    __table_args__ = (UniqueConstraint("team_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[dict[str, Any]] = mapped_column()
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Question(Base):
    __tablename__ = "questions"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"))
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    answered_by: Mapped[str | None] = mapped_column(String(128), default=None)
    asked_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # set when answered, or when its objective ends: a closed question answers nothing
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class Note(Base):
    """The objective's blackboard: notes any step may add and every later step reads."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(Integer, default=None)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class InboundEvent(Base):
    """A platform delivery id, stored once: a redelivered event starts nothing twice."""

    __tablename__ = "inbound_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_key: Mapped[str] = mapped_column(String(200), unique=True)
    objective_id: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OutboxEvent(Base):
    """An event on its way to a thread: open until delivered or dead (given up, kept to inspect)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    platform: Mapped[str] = mapped_column(String(32))
    thread_key: Mapped[str] = mapped_column(String(300), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    progress: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, index=True, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    dead_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)  # given up on
    # A dispatcher's lease on the thread's open rows: two processes never deliver one thread.
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, default=None)


# Serves the dispatcher's head query (each thread's oldest open row): only open rows are in it,
# however many delivered and dead ones the table keeps. Its WHERE is swarm/outbox.py's `_open`.
_OUTBOX_OPEN = OutboxEvent.delivered_at.is_(None) & OutboxEvent.dead_at.is_(None)
Index("ix_outbox_open_head", OutboxEvent.thread_key, OutboxEvent.id,
      sqlite_where=_OUTBOX_OPEN, postgresql_where=_OUTBOX_OPEN)


class MessageRef(Base):
    """A platform message the edge posted for an objective (progress, approval, ...)."""

    __tablename__ = "message_refs"
    __table_args__ = (UniqueConstraint("platform", "objective_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    objective_id: Mapped[int] = mapped_column(Integer, index=True)
    key: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64), index=True)
    # When the message was last edited (a progress message): processes that share the database
    # take turns by it, so together they keep to the platform's edit rate (bot/progress.py).
    edited_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    objective_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    detail: Mapped[dict[str, Any]] = mapped_column()
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row holding the chain's last hash; locked while appending so the chain never forks."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))


class ObjectiveConstraints(Base):
    """What the manager read as the objective's constraints when it planned (shown with the
    plan, approved with it): market, audience, scope, hard constraints, success measure."""

    __tablename__ = "objective_constraints"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), unique=True)
    data: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ObjectiveOverride(Base):
    """What one objective runs differently from the settings: its workers' model tier (a
    recurring goal's `--tier`)."""

    __tablename__ = "objective_overrides"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), unique=True)
    worker_tier: Mapped[str | None] = mapped_column(String(16), default=None)


class GroundingCheck(Base):
    """One grounding check of an objective against its goal, constraints and decisions."""

    __tablename__ = "grounding_checks"
    id: Mapped[int] = mapped_column(primary_key=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(32))  # steps | schedule | command
    signal: Mapped[str] = mapped_column(String(16))  # prefilter | judge
    aligned: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    verdicts: Mapped[list[Any]] = mapped_column(default=list)
    drifted: Mapped[str] = mapped_column(Text, default="")
    correction: Mapped[str] = mapped_column(Text, default="")
    outputs_until: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    approval_id: Mapped[int | None] = mapped_column(Integer, default=None)  # its drift decision
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
