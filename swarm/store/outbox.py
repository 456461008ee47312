"""The transactional outbox: events are rows written with the state change that caused them.

A row is open until it is delivered or dead (given up on; kept for inspection). Threads are
independent: the dispatcher picks threads by their head (oldest open row) and delivers each
thread's rows in id order, so one thread that cannot be delivered holds back nobody else.

Two dispatchers (two processes on one database) never deliver one thread at once: a dispatcher
claims all of a thread's open rows with a lease (`claimed_by`, `claimed_until`) in one short
transaction, and delivers only rows it holds. The claim's UPDATE is guarded in its own WHERE
clause (checked by rowcount): no open row of the thread is leased by another dispatcher, and
the thread has no open row the claimer did not lock. On PostgreSQL the claimer first locks the
rows with `FOR UPDATE SKIP LOCKED`, so two racing claimers never wait on each other: the one
that misses a row backs off, and a row whose id committed late (ids are handed out before
commit) fails the guard instead of being delivered beside the claimed ones (one that commits
after the claim waits for the claimer to finish: a thread's rows go out in commit order). On
SQLite, where `FOR UPDATE` does not exist and writes are serialised, the guarded UPDATE alone
decides. A commit wakes the dispatchers of other processes through LISTEN/NOTIFY on PostgreSQL
(swarm/store/notify.py). The lease is short and renewed while its thread is delivered
(bot/dispatcher.py), so the threads of a process that died mid-delivery wait seconds, not
minutes, for another.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Delete,
    Update,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from swarm.events import Event, event_from_payload
from swarm.redact import redact_value
from swarm.store.models import OutboxEvent, ThreadRef, table, utcnow
from swarm.store.notify import notify

_INSERT = insert(table(OutboxEvent))


def emit(tx: Session | Connection, thread: ThreadRef, *events: Event) -> None:
    """Write the events, in order, in the caller's transaction (ORM session or Core); on
    PostgreSQL the other processes' dispatchers are woken when it commits."""
    tx.execute(_INSERT, [{"objective_id": e.objective_id, "platform": thread.platform,
                          "thread_key": thread.key, "kind": e.event_type, "progress": e.progress,
                          "payload": redact_value(e.to_payload())} for e in events])
    notify(tx, thread.platform)


def _open(t: Any = OutboxEvent) -> ColumnElement[bool]:
    """Neither delivered nor dead; the same WHERE as the partial index ix_outbox_open_head."""
    return and_(t.delivered_at.is_(None), t.dead_at.is_(None))


def _leased_by_other(t: Any, owner: str, now: datetime) -> ColumnElement[bool]:
    return and_(t.claimed_until > now, t.claimed_by != owner)


def due_threads(session: Session, platforms: list[str], owner: str | None,
                limit: int = 100) -> list[str]:
    """Threads whose head is due, oldest head first; with an `owner`, only those no other
    dispatcher holds."""
    now = utcnow()
    heads = (select(OutboxEvent.thread_key, func.min(OutboxEvent.id).label("head"))
             .where(_open(), OutboxEvent.platform.in_(platforms))
             .group_by(OutboxEvent.thread_key).subquery())
    head, other = aliased(OutboxEvent), aliased(OutboxEvent)
    query = (select(head.thread_key).join(heads, head.id == heads.c.head)
             .where(or_(head.next_attempt_at.is_(None), head.next_attempt_at <= now)))
    if owner is not None:
        query = query.where(~exists().where(other.thread_key == head.thread_key, _open(other),
                                            _leased_by_other(other, owner, now)))
    return list(session.scalars(query.order_by(head.id).limit(limit)))


def claim(session: Session, thread_key: str, owner: str, lease_s: float,
          limit: int = 100) -> list[OutboxEvent]:
    """Lease all the thread's open rows to `owner` and return the first `limit` in order, or
    nothing if another dispatcher holds the thread. Commit before delivering."""
    now = utcnow()
    in_thread = and_(OutboxEvent.thread_key == thread_key, _open())
    locked = len(session.scalars(select(OutboxEvent.id).where(in_thread)
                                 .with_for_update(skip_locked=True)).all())
    if not locked:
        return []
    other = aliased(OutboxEvent)
    also_in_thread = and_(other.thread_key == thread_key, _open(other))
    # Every open row is one we locked (we lock only open rows we see, so equal counts are
    # equal sets), and none is leased by another dispatcher.
    all_locked = select(func.count()).select_from(other).where(also_in_thread).scalar_subquery()
    taken = exists().where(also_in_thread, _leased_by_other(other, owner, now))
    if not _changed(session, update(OutboxEvent).where(in_thread, all_locked == locked, ~taken)
                    .values(claimed_by=owner, claimed_until=now + timedelta(seconds=lease_s))):
        return []
    return list(session.scalars(
        select(OutboxEvent).where(in_thread, OutboxEvent.claimed_by == owner)
        .order_by(OutboxEvent.id).limit(limit)))


def has_due(session: Session, platforms: list[str]) -> bool:
    return bool(due_threads(session, platforms, None, limit=1))


def mark_delivered(session: Session, ids: list[int]) -> None:
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(delivered_at=utcnow()))


def renew(session: Session, thread_key: str, owner: str, lease_s: float) -> None:
    """Extend the owner's lease on the thread's open rows (as each row is settled)."""
    session.execute(update(OutboxEvent).where(OutboxEvent.thread_key == thread_key,
                                              OutboxEvent.claimed_by == owner, _open())
                    .values(claimed_until=utcnow() + timedelta(seconds=lease_s)))


def release(session: Session, thread_key: str, owner: str) -> None:
    session.execute(update(OutboxEvent).where(OutboxEvent.thread_key == thread_key,
                                              OutboxEvent.claimed_by == owner, _open())
                    .values(claimed_by=None, claimed_until=None))


def mark_failed(session: Session, row_id: int, error: str, backoff_s: float) -> None:
    """Try the row again after `backoff_s`; its thread's later rows wait for it."""
    session.execute(update(OutboxEvent).where(OutboxEvent.id == row_id).values(
        attempts=OutboxEvent.attempts + 1, last_error=error[:500],
        next_attempt_at=utcnow() + timedelta(seconds=backoff_s)))


def mark_dead(session: Session, row_id: int, error: str) -> None:
    """Give up on the row: it stays for inspection and no longer holds back its thread."""
    session.execute(update(OutboxEvent).where(OutboxEvent.id == row_id).values(
        attempts=OutboxEvent.attempts + 1, last_error=error[:500], dead_at=utcnow()))


def reopen_latest(session: Session, platform: str, objective_ids: Iterable[int]) -> int:
    """Put each objective's latest delivered row of `platform` back in the outbox, for the next
    dispatcher: at shutdown an edge leaves an edit it still owes (a throttled progress edit)
    this way instead of retrying it. Deliveries are idempotent (each message posted once, by
    its ref), so the redelivery only re-renders. Returns how many rows were reopened."""
    reopened = 0
    for oid in objective_ids:
        latest = session.scalar(select(func.max(OutboxEvent.id)).where(
            OutboxEvent.platform == platform, OutboxEvent.objective_id == oid,
            OutboxEvent.delivered_at.is_not(None), OutboxEvent.dead_at.is_(None)))
        if latest is not None:  # guarded: only a row still delivered is reopened
            reopened += _changed(session, update(OutboxEvent).where(
                OutboxEvent.id == latest, OutboxEvent.delivered_at.is_not(None)).values(
                delivered_at=None, attempts=0, next_attempt_at=None, claimed_by=None,
                claimed_until=None))
    if reopened:
        notify(session, platform)
    return reopened


def prune_delivered(session: Session, before: datetime, batch: int = 1000) -> int:
    """Delete up to `batch` rows delivered before `before` (dead rows stay); returns how many."""
    old = aliased(OutboxEvent)  # an alias, or the subquery would correlate to the DELETE
    ids = select(old.id).where(old.delivered_at < before).limit(batch)
    return _changed(session, delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))


def _changed(session: Session, statement: Update | Delete) -> int:
    """Rows the statement changed (the session's objects are not synchronised: none is kept)."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(cast(CursorResult[Any], result).rowcount or 0)


def to_event(row: OutboxEvent) -> Event:
    return event_from_payload(row.kind, row.payload)
