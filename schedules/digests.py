"""Status digests per channel, on a cron an admin sets (`/swarm digest CRON|off`; default off).

A digest counts, since the channel's last one: objectives started, finished and failed; the
objectives waiting now and the approvals waiting (and for how long); drift notices; and spend
against the team's monthly budget. Every figure is read from the database.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, exists, func, select, update

from schedules.clock import Clock, current
from schedules.tables import DigestSchedule
from swarm.contract import ThreadRef
from swarm.events import Digest, WaitingApproval
from swarm.llm.budget import team_key
from swarm.states import TERMINAL_OBJECTIVE, ApprovalState, ObjectiveState, StepState
from swarm.store.guards import changed
from swarm.store.models import Approval, GroundingCheck, Objective, Step, utcnow
from swarm.store.outbox import emit
from swarm.store.spend import month_key, month_start, objectives_spend, team_spend

log = logging.getLogger(__name__)


def channel_thread(platform: str, team_id: str, channel_id: str) -> ThreadRef:
    """A channel's own messages (digests): no thread, posted to the channel itself."""
    return ThreadRef(platform, team_id, channel_id, "")


async def send_digest(digest_id: int) -> None:
    """The job of one channel's digest schedule (id `digest:<id>`)."""
    clock = current()
    await clock.db.retrying(lambda: post_digest(clock, digest_id), "digest.send")


def post_digest(clock: Clock, digest_id: int, now: datetime | None = None) -> Digest | None:
    """Emit the digest once per firing: two processes firing it race on `last_sent_at`."""
    now = now or utcnow()
    with clock.db.tx() as s:
        row = s.get(DigestSchedule, digest_id)
        if row is None:  # turned off meanwhile
            return None
        since = row.last_sent_at or row.created_at
        if not changed(s, update(DigestSchedule).where(
                DigestSchedule.id == digest_id,
                DigestSchedule.last_sent_at.is_(None) if row.last_sent_at is None
                else DigestSchedule.last_sent_at == row.last_sent_at)
                .values(last_sent_at=now).execution_options(synchronize_session=False)):
            return None
        digest = figures(clock, row.platform, row.team_id, row.channel_id, since, now)
        emit(s, channel_thread(row.platform, row.team_id, row.channel_id), digest)
    log.info("digest.sent digest=%s channel=%s", digest_id, row.channel_id)
    return digest


def figures(clock: Clock, platform: str, team_id: str, channel_id: str, since: datetime,
            now: datetime) -> Digest:
    here = (Objective.platform == platform, Objective.team_id == team_id,
            Objective.channel_id == channel_id)
    ids = select(Objective.id).where(*here)
    open_ = Objective.state.not_in([o.value for o in TERMINAL_OBJECTIVE])
    with clock.db.read() as s:
        def count(*where: ColumnElement[bool]) -> int:
            return int(s.scalar(select(func.count(Objective.id)).where(*here, *where)) or 0)

        started = count(Objective.created_at >= since)
        finished = count(Objective.state == ObjectiveState.FINISHED,
                         Objective.finished_at >= since)
        failed = count(Objective.state == ObjectiveState.FAILED, Objective.finished_at >= since)
        asking = exists().where(Step.objective_id == Objective.id,
                                Step.state == StepState.WAITING_HUMAN)
        waiting = count(open_, Objective.state.in_([ObjectiveState.AWAITING_APPROVAL,
                                                    ObjectiveState.PAUSED]) | asking)
        approvals = [WaitingApproval(oid, aid, title, (now - at).total_seconds())
                     for aid, oid, title, at in s.execute(
                         select(Approval.id, Approval.objective_id, Approval.title,
                                Approval.requested_at)
                         .join(Objective, Objective.id == Approval.objective_id)
                         .where(*here, open_, Approval.state == ApprovalState.PENDING)
                         .order_by(Approval.requested_at))]
        drift = int(s.scalar(select(func.count(GroundingCheck.id)).where(
            GroundingCheck.objective_id.in_(ids), GroundingCheck.aligned.is_(False),
            GroundingCheck.created_at >= since)) or 0)
        spent = objectives_spend(s, ids, since)
        month = team_spend(s, team_id, month_start(now))
        ceiling = clock.swarm.budget.ceiling(s, team_key(team_id, month_key(now)),
                                             clock.swarm.budget.team_default)
    return Digest(0, since.isoformat(), started, finished, failed, waiting, approvals, drift,
                  spent.cost, bool(spent.unpriced), month.cost, ceiling.usd)
