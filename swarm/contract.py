"""The neutral contract between the chat edges and the swarm: references, results, user errors.

Nothing here knows SQLAlchemy or a platform SDK; adapters and services both import it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadRef:
    """Where an objective lives: one chat thread on one platform."""

    platform: str
    team_id: str
    channel_id: str
    thread_id: str

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.team_id}:{self.channel_id}:{self.thread_id}"


@dataclass(frozen=True)
class Principal:
    """Who asks, as the platform reports it: an adapter states these facts and the swarm's
    policy decides what they allow (swarm/services/policy.py). `platform_admin` is the
    platform's own word: a Slack workspace admin or owner, a Discord member with Manage Server."""

    user: str
    team_id: str
    platform: str = "console"
    platform_admin: bool = False
    channel_id: str | None = None

    @property
    def where(self) -> str:
        return ":".join(p for p in (self.platform, self.team_id, self.channel_id) if p)


Actor = Principal | str  # a bare user id: no platform facts, the objective's team


@dataclass(frozen=True)
class Started:
    objective_id: int
    duplicate: bool


@dataclass(frozen=True)
class Decision:
    """What became of a human's request (approve, cancel, pause...); `message` is for them."""

    ok: bool
    message: str


# Ids are 64-bit in both databases: a larger number, typed by a user or carried in a payload,
# names nothing (and must not reach a query, where it would overflow).
MAX_ID = 2**63 - 1


def valid_id(value: int) -> bool:
    return 0 < value <= MAX_ID


class UserError(ValueError):
    """Something a user asked that cannot be done; the message says why, for the thread."""
