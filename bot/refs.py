"""Messages an edge posted for an objective (progress, approvals, results), by key, per platform."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from swarm.store.db import Database
from swarm.store.models import MessageRef

PROGRESS = "progress"


def approval_key(approval_id: int) -> str:
    return f"approval:{approval_id}"


def approval_id_of(key: str) -> int | None:
    kind, _, rest = key.partition(":")
    return int(rest) if kind == "approval" and rest.isdigit() else None


class MessageRefs:
    """The `message_refs` table seen from one platform: message_id is the platform's own id
    (Slack: the message's `ts`; Discord: the message id)."""

    def __init__(self, db: Database, platform: str) -> None:
        self.db, self.platform = db, platform

    def get(self, objective_id: int, key: str) -> MessageRef | None:
        with self.db.read() as s:
            return s.scalar(select(MessageRef).where(MessageRef.platform == self.platform,
                                                     MessageRef.objective_id == objective_id,
                                                     MessageRef.key == key))

    def save(self, objective_id: int, key: str, channel: str, ts: str) -> None:
        # No wake-up of the dispatcher: a ref is bookkeeping, not new work.
        try:
            with self.db.tx(wake=False) as s:
                s.add(MessageRef(platform=self.platform, objective_id=objective_id, key=key,
                                 channel_id=channel, message_id=ts))
        except IntegrityError:  # a redelivery raced us to it: the first message stands
            pass

    def at(self, channel: str, ts: str) -> MessageRef | None:
        """The ref of the message at (channel, ts), e.g. the approval a reaction was put on."""
        with self.db.read() as s:
            return s.scalars(select(MessageRef).where(MessageRef.platform == self.platform,
                                                      MessageRef.channel_id == channel,
                                                      MessageRef.message_id == ts)
                             .order_by(MessageRef.id)).first()
