"""Append-only audit log whose entries chain hashes, so an edited or deleted row shows."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from swarm.redact import redact_value
from swarm.store.models import AuditEntry, AuditHead, table

GENESIS = "0" * 64


def _digest(prev: str, at: str, actor: str, action: str, objective_id: int | None,
            detail: dict[str, Any]) -> str:
    body = json.dumps([prev, at, actor, action, objective_id, detail], sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


_head, _entries = table(AuditHead), table(AuditEntry)
_HEAD = select(_head.c.hash).where(_head.c.id == 1).with_for_update()
_NEW_HEAD = insert(_head)
_MOVE_HEAD = update(_head).where(_head.c.id == 1)
_APPEND = insert(_entries)


def audit(session: Session, actor: str, action: str, objective_id: int | None = None,
          **detail: Any) -> None:
    """Append one entry in the caller's transaction; the head row lock keeps the chain linear.
    Core statements: an entry is written and never loaded again in the same session."""
    prev = session.execute(_HEAD).scalar()
    clean = redact_value(detail)
    at = datetime.now(UTC).isoformat()
    digest = _digest(prev or GENESIS, at, actor, action, objective_id, clean)
    session.execute(_APPEND, {"at": at, "actor": actor, "action": action,
                              "objective_id": objective_id, "detail": clean,
                              "prev_hash": prev or GENESIS, "hash": digest})
    if prev is None:
        session.execute(_NEW_HEAD, {"id": 1, "hash": digest})
    else:
        session.execute(_MOVE_HEAD, {"hash": digest})


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify_chain(session: Session) -> ChainReport:
    prev, count = GENESIS, 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        count += 1
        if entry.prev_hash != prev:
            return ChainReport(False, count, entry.id, "a previous entry was removed or changed")
        expected = _digest(prev, entry.at, entry.actor, entry.action, entry.objective_id,
                           entry.detail)
        if entry.hash != expected:
            return ChainReport(False, count, entry.id, "this entry was edited")
        prev = entry.hash
    head = session.get(AuditHead, 1)
    if head is not None and head.hash != prev:
        return ChainReport(False, count, None, "the newest entries were removed")
    return ChainReport(True, count)
