"""The Celery executor's own promises, beyond the engine suite it passes: a cancel reaches a
step running on a worker between its model calls, and what a worker starts (a team) is driven
by the processes that drive."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from swarm.store.models import LLMCall, Step, StepRun
from tests.celery_steps import celery_swarm
from tests.conftest import _pg_schema_url, make_settings
from tests.scenarios import THREAD

GOAL = "Launch a localized campaign for our SaaS in Japan"


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


async def test_a_cancel_reaches_a_step_on_a_worker_between_its_model_calls(
        tmp_path: Path, pg_url: str) -> None:
    # the draft (s3) makes four calls when it runs to the end: write, rejected, write, accepted
    settings = make_settings(tmp_path, pg_url, offline_latency_ms=300.0)
    async with celery_swarm(settings, pg_url) as swarm:
        started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
        await swarm.join()
        oid = started.objective_id
        assert (await swarm.decide(swarm.pending_approvals(oid)[0].id, "alice", True)).ok

        def draft_calls() -> int:
            with swarm.db.read() as s:
                return int(s.scalar(select(func.count()).select_from(LLMCall).join(
                    Step, Step.id == LLMCall.step_id).where(Step.key == "s3")) or 0)

        def drafting() -> bool:  # on the worker, the draft's first call is out
            with swarm.db.read() as s:
                return s.scalar(select(Step.state).where(Step.key == "s3")) == "running"

        while not drafting():
            await asyncio.sleep(0.02)
        assert draft_calls() == 0
        assert (await swarm.cancel(oid, "alice")).ok
        await swarm.join()
    # the worker has stopped (its shutdown waits for the tasks it runs)
    # the call out when the cancel came returned; the critic was never asked
    assert draft_calls() == 1, "the worker went on calling models after the cancel"
    with swarm.db.read() as s:
        step = s.scalar(select(Step).where(Step.key == "s3"))
        assert step is not None and step.state == "cancelled" and step.output is None
        runs = list(s.scalars(select(StepRun.state).where(StepRun.step_id == step.id)))
    assert runs == ["abandoned"]


async def test_a_team_a_worker_planned_is_driven_by_the_web_process_watching(
        tmp_path: Path, pg_url: str) -> None:
    """A team step's team is started and planned where the step ran: on a worker, which
    drives nothing. The driving process finds the running team by watching, and drives it."""
    settings = make_settings(tmp_path, pg_url)
    async with celery_swarm(settings, pg_url) as swarm:
        watching = asyncio.get_running_loop().create_task(swarm.engine.watch_running(0.2))
        try:
            started = await swarm.start_objective(GOAL + " [team]", THREAD, "alice", "evt-1")
            oid = started.objective_id
            async with asyncio.timeout(90):
                while (view := swarm.view(oid)) is None or view.state != "finished":
                    assert view is None or view.state in ("planning", "awaiting_approval",
                                                          "running"), view.reason
                    for approval in swarm.pending_approvals(oid):  # the team's asks here too
                        assert (await swarm.decide(approval.id, "alice", True)).ok
                    await asyncio.sleep(0.1)
        finally:
            watching.cancel()
        await swarm.join()
    [team] = view.teams.values()
    assert team.state == "finished" and len(team.steps) == 5
    with swarm.db.read() as s:
        drafted = s.scalar(select(Step).where(Step.objective_id == oid, Step.key == "s3"))
        assert drafted is not None and drafted.team and drafted.state == "finished"
