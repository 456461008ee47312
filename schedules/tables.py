"""The schedules' own tables: digests and recurring goals per channel, and reminders sent.

They live on the swarm's metadata (one database, one migration environment: bot/schema.py
gathers them with the others for swarm/store/migrations).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swarm.store.models import Base, utcnow


class DigestSchedule(Base):
    """A channel's status digest, posted on `cron` (set by an admin; none: off)."""

    __tablename__ = "digest_schedules"
    __table_args__ = (UniqueConstraint("platform", "team_id", "channel_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    team_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str] = mapped_column(String(120))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class RecurringGoal(Base):
    """A goal an admin registered with a cron: each firing starts a new objective."""

    __tablename__ = "recurring_goals"
    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    channel_id: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str] = mapped_column(String(120))
    goal: Mapped[str] = mapped_column(Text)
    policy: Mapped[str] = mapped_column(String(8))  # ask | auto | deny (unattended approvals)
    budget_usd: Mapped[float | None] = mapped_column(Float, default=None)  # per run
    tier: Mapped[str | None] = mapped_column(String(16), default=None)  # its workers' tier
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RecurringRun(Base):
    """The objective one firing of a recurring goal started."""

    __tablename__ = "recurring_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    recurring_id: Mapped[int] = mapped_column(Integer, index=True)
    objective_id: Mapped[int] = mapped_column(ForeignKey("objectives.id"), unique=True)
    fired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReminderSent(Base):
    """A pending approval was reminded: once (the unique key decides between two processes)."""

    __tablename__ = "approval_reminders"
    id: Mapped[int] = mapped_column(primary_key=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"), unique=True)
    reminded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
