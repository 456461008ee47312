"""The clock's jobs follow the database: a digest or recurring goal row has its cron job, and a
job whose row is gone is removed. Commands write rows (from any process); this reads them."""
from __future__ import annotations

from sqlalchemy import select

from schedules import cron
from schedules.clock import Clock, current
from schedules.registry import every
from schedules.tables import DigestSchedule, RecurringGoal
from swarm.contract import UserError

DIGEST_JOB, RECURRING_JOB = "digest:", "recurring:"


@every("schedules.sync", lambda settings: settings.schedule_sync_every)
async def sync() -> None:
    sync_jobs(current())


def sync_jobs(clock: Clock) -> None:
    with clock.db.read() as s:
        digests = list(s.execute(select(DigestSchedule.id, DigestSchedule.cron)))
        goals = list(s.execute(select(RecurringGoal.id, RecurringGoal.cron)))
    wanted: set[str] = set()
    for prefix, func, rows in ((DIGEST_JOB, "schedules.digests:send_digest", digests),
                               (RECURRING_JOB, "schedules.recurring:fire", goals)):
        for row_id, expr in rows:
            try:
                trigger = cron.trigger(expr)
            except UserError:  # checked when it was set; a row edited by hand is skipped
                continue
            wanted.add(f"{prefix}{row_id}")
            clock.ensure(f"{prefix}{row_id}", func, trigger, [row_id])
    for job_id in clock.job_ids():
        if job_id.startswith((DIGEST_JOB, RECURRING_JOB)) and job_id not in wanted:
            clock.remove(job_id)
