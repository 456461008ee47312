"""The clock: one APScheduler `AsyncIOScheduler` per database, its jobs in the same database.

Jobs are stored by the `SQLAlchemyJobStore` on the app's engine, so they survive a restart;
`coalesce` and a misfire grace make a bot that was down through several firings run a job once
when it starts. Jobs already in the store keep their schedule (so a missed firing is run, not
forgotten); one whose trigger changed is replaced under its stable id.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from schedules import registry
from swarm.services.objectives import Swarm

if TYPE_CHECKING:
    from schedules.grounding import Grounder

log = logging.getLogger(__name__)
JOBS_TABLE = "apscheduler_jobs"
_current: Clock | None = None


def current() -> Clock:
    """The clock running in this process (job functions find their swarm through it)."""
    if _current is None:
        raise RuntimeError("no clock is running in this process")
    return _current


def running() -> Clock | None:
    """The clock of this process, if it runs one (commands sync it at once; else the clock
    process reads the change within THREADSWARM_SCHEDULE_SYNC_EVERY)."""
    return _current


class Clock:
    def __init__(self, swarm: Swarm, grounder: Grounder) -> None:
        self.swarm, self.settings, self.db = swarm, swarm.settings, swarm.db
        self.grounder = grounder
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine,
                                                     tablename=JOBS_TABLE)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(
                              self.settings.schedule_misfire_grace.total_seconds())},
            timezone=UTC)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        """On the swarm's loop: start, declare the registry's jobs, and read the schedules."""
        global _current
        self.scheduler.start()
        _current = self
        for job in registry.declared():
            seconds = job.interval(self.settings).total_seconds()
            if seconds > 0:
                self.ensure(job.id, job.func, IntervalTrigger(seconds=seconds))
        from schedules.sync import sync_jobs  # it imports this module (for current())

        sync_jobs(self)
        log.info("clock.started jobs=%d", len(self.scheduler.get_jobs()))

    def ensure(self, job_id: str, func: str, trigger: BaseTrigger,
               args: Sequence[Any] = ()) -> Job:
        """The job `job_id` as given: kept when the store has it with this trigger and these
        arguments (its next firing stands), replaced otherwise."""
        job = self.scheduler.get_job(job_id)
        if job is not None and str(job.trigger) == str(trigger) and list(job.args) == list(args) \
                and job.func_ref == func:
            return job
        return self.scheduler.add_job(func, trigger, args=list(args), id=job_id, name=job_id,
                                      replace_existing=True)

    def remove(self, job_id: str) -> None:
        if self.scheduler.get_job(job_id) is not None:
            self.scheduler.remove_job(job_id)

    def job_ids(self) -> list[str]:
        return sorted(j.id for j in self.scheduler.get_jobs())

    def shutdown(self) -> None:
        global _current
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if _current is self:
            _current = None
