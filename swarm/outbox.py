"""The transactional outbox: events are rows written with the state change that caused them."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.orm import Session

from swarm.events import Event, event_from_payload
from swarm.models import OutboxEvent, ThreadRef, table, utcnow
from swarm.redact import redact_value

_INSERT = insert(table(OutboxEvent))


def emit(tx: Session | Connection, thread: ThreadRef, *events: Event) -> None:
    """Write the events, in order, in the caller's transaction (ORM session or Core)."""
    tx.execute(_INSERT, [{"objective_id": e.objective_id, "platform": thread.platform,
                          "thread_key": thread.key, "kind": e.event_type, "progress": e.progress,
                          "payload": redact_value(e.to_payload())} for e in events])


def pending(session: Session, platforms: list[str], limit: int = 500) -> list[OutboxEvent]:
    now = utcnow()
    rows = session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.delivered_at.is_(None), OutboxEvent.platform.in_(platforms))
        .order_by(OutboxEvent.id).limit(limit)
    ).all()
    # A thread whose oldest row waits for a retry holds back its later rows: order per thread.
    held = {r.thread_key for r in rows if r.next_attempt_at and r.next_attempt_at > now}
    return [r for r in rows if r.thread_key not in held]


def mark_delivered(session: Session, ids: list[int]) -> None:
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(delivered_at=utcnow()))


def mark_failed(session: Session, row_id: int, error: str, backoff_s: float) -> None:
    row = session.get(OutboxEvent, row_id)
    if row is not None:
        row.attempts += 1
        row.last_error = error[:500]
        row.next_attempt_at = utcnow() + timedelta(seconds=backoff_s)


def to_event(row: OutboxEvent) -> Event:
    return event_from_payload(row.kind, row.payload)
