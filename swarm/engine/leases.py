"""Leases on running steps: who runs a step, until when, and taking over those nobody renews.

A claim writes a fresh token, this process's owner name and an expiry on the step; a heartbeat
renews the expiry of every step the process still runs. Another process (a rolling deploy,
`threadswarm resume` beside `serve`) takes a running step over only once its lease expired, or
at once when its owner is a process on this machine that no longer exists (after a SIGKILL,
`resume` need not wait out the lease).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, or_, select, update
from sqlalchemy.orm import Session

from swarm.states import RunState, StepState
from swarm.store import owners
from swarm.store.models import Step, StepRun, table, utcnow

log = logging.getLogger(__name__)
_steps, _runs = table(Step), table(StepRun)


def expiry(lease_s: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=lease_s)


_RENEW = (update(_steps)
          .where(_steps.c.id.in_(bindparam("sids", expanding=True)),
                 _steps.c.claim_token.in_(bindparam("tokens", expanding=True)),
                 _steps.c.state == StepState.RUNNING)
          .values(lease_expires_at=bindparam("until"))
          .returning(_steps.c.id))


def renew(c: Connection, claims: dict[int, str], until: datetime) -> set[int]:
    """Extend the leases of `claims` (step id -> token); returns the ids still held."""
    if not claims:
        return set()
    rows = c.execute(_RENEW, {"sids": list(claims), "tokens": sorted(set(claims.values())),
                              "until": until})
    return {sid for (sid,) in rows}


def lapsed(c: Connection | Session, objective_ids: list[int] | None = None
           ) -> tuple[list[int], set[str]]:
    """The running steps whose lease lapsed or whose owner is gone, and those gone owners."""
    now = utcnow()
    query = select(_steps.c.id, _steps.c.lease_owner, _steps.c.lease_expires_at).where(
        _steps.c.state == StepState.RUNNING)
    if objective_ids is not None:
        query = query.where(_steps.c.objective_id.in_(objective_ids))
    rows = list(c.execute(query))
    gone = {owner for _, owner, _ in rows if owner is not None and owners.gone(owner)}
    return [sid for sid, owner, until in rows
            if owner is None or until is None or until < now or owner in gone], gone


def take_over(c: Connection, objective_ids: list[int] | None = None) -> list[int]:
    """Put running steps whose lease expired (or whose owner is gone) back to ready, their
    runs abandoned; returns their ids. Steps leased by a live process are left alone."""
    now = utcnow()
    due, gone = lapsed(c, objective_ids)
    if not due:
        return []
    # checked again in the UPDATE: a heartbeat may have renewed a lease since the SELECT
    taken = [sid for (sid,) in c.execute(
        update(_steps)
        .where(_steps.c.id.in_(due), _steps.c.state == StepState.RUNNING,
               or_(_steps.c.lease_owner.is_(None), _steps.c.lease_expires_at.is_(None),
                   _steps.c.lease_expires_at < now, _steps.c.lease_owner.in_(sorted(gone))))
        .values(state=StepState.READY, claim_token=None, lease_owner=None,
                lease_expires_at=None)
        .returning(_steps.c.id))]
    if taken:
        c.execute(update(_runs).where(_runs.c.step_id.in_(taken),
                                      _runs.c.state == RunState.RUNNING)
                  .values(state=RunState.ABANDONED, finished_at=now,
                          error="taken over: its process stopped renewing the lease"))
        log.info("lease.taken_over steps=%s", taken)
    return taken
