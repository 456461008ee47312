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
    """Walk the chain in id order; the first entry that does not follow names the tampering:
    edited (its hash no longer matches its content), moved (intact, but it follows another
    entry's hash), or preceded by a deleted entry (intact, following a hash no row has)."""
    hashes = set(session.scalars(select(AuditEntry.hash)))
    prev, prev_id, count = GENESIS, 0, 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        count += 1
        intact = entry.hash == _digest(entry.prev_hash, entry.at, entry.actor, entry.action,
                                       entry.objective_id, entry.detail)
        if not intact:
            return ChainReport(False, count, entry.id, "this entry was edited")
        if entry.prev_hash != prev:
            if entry.prev_hash in hashes:
                return ChainReport(False, count, entry.id,
                                   "this entry was moved: it does not follow the entry before it")
            if entry.id == prev_id + 1:  # nothing missing: the one before was rewritten
                return ChainReport(False, count - 1, prev_id,
                                   "this entry was edited and its hash recomputed")
            missing = f"#{prev_id + 1}" if entry.id == prev_id + 2 else \
                f"#{prev_id + 1}..#{entry.id - 1}"
            return ChainReport(False, count, entry.id,
                               f"the entry before it was deleted ({missing})")
        prev, prev_id = entry.hash, entry.id
    head = session.get(AuditHead, 1)
    if head is not None and head.hash != prev:
        return ChainReport(False, count, None,
                           f"the newest entries were deleted (after #{prev_id})")
    return ChainReport(True, count)
