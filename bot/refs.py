"""Messages an edge posted for an objective (progress, approvals, results), by key, per platform."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError

from swarm.store.db import Database
from swarm.store.models import MessageRef, utcnow

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

    def save(self, objective_id: int, key: str, channel: str, ts: str, *,
             edited: bool = False) -> None:
        """`edited`: the post counts as the message's last edit (a progress message's)."""
        # No wake-up of the dispatcher: a ref is bookkeeping, not new work.
        try:
            with self.db.tx(wake=False) as s:
                s.add(MessageRef(platform=self.platform, objective_id=objective_id, key=key,
                                 channel_id=channel, message_id=ts,
                                 edited_at=utcnow() if edited else None))
        except IntegrityError:  # a redelivery raced us to it: the first message stands
            pass

    def at(self, channel: str, ts: str) -> MessageRef | None:
        """The ref of the message at (channel, ts), e.g. the approval a reaction was put on."""
        with self.db.read() as s:
            return s.scalars(select(MessageRef).where(MessageRef.platform == self.platform,
                                                      MessageRef.channel_id == channel,
                                                      MessageRef.message_id == ts)
                             .order_by(MessageRef.id)).first()

    def take_edit_turn(self, ref: MessageRef, interval_s: float) -> float:
        """Claim the next edit of the message, for every process on the database: 0.0 when it
        is this caller's (no edit was made in the last `interval_s`), else the seconds until
        one may be made. Counted from the edit's answer too (`edited`)."""
        now = utcnow()
        with self.db.tx(wake=False) as s:
            taken = s.execute(update(MessageRef).where(
                MessageRef.id == ref.id, or_(MessageRef.edited_at.is_(None),
                                             MessageRef.edited_at <= now - timedelta(
                                                 seconds=interval_s)))
                .values(edited_at=now).execution_options(synchronize_session=False))
            if cast(CursorResult[Any], taken).rowcount:
                return 0.0
            last = s.scalar(select(MessageRef.edited_at).where(MessageRef.id == ref.id))
        if last is None:  # the ref is gone (never: refs are not deleted); do not hold the edit
            return 0.0
        return max(0.01, (last + timedelta(seconds=interval_s) - now).total_seconds())

    def edited(self, ref: MessageRef) -> None:
        """The platform answered an edit (or the post) of the message: its interval starts."""
        with self.db.tx(wake=False) as s:
            s.execute(update(MessageRef).where(MessageRef.id == ref.id)
                      .values(edited_at=utcnow()).execution_options(synchronize_session=False))
