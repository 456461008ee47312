"""The clock as a team meets it: a real APScheduler on the app's database, short intervals.

Digests fire on their cron with figures from the database; a pending approval is reminded and
then expires (the objective pauses until an admin resumes it); a recurring goal starts an
objective at each firing and follows its unattended policy; jobs survive a restart without
duplicates, and a clock that was down through three firings runs the job once.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select, text

from schedules import approvals, digests, recurring
from schedules.clock import JOBS_TABLE
from schedules.sync import sync_jobs
from schedules.tables import DigestSchedule, RecurringGoal, RecurringRun
from swarm.events import ApprovalExpired, ApprovalReminder, Digest
from swarm.llm.budget import objective_key
from swarm.services.objectives import Swarm
from swarm.states import ApprovalState
from swarm.store.models import Approval, BudgetCeiling, GroundingCheck, LLMCall, Objective, utcnow
from tests.clocks import clock_for, events, until
from tests.scenarios import THREAD, approve_all

GOAL = "Launch a localized campaign for our SaaS in Japan"
CHANNEL = ("console", THREAD.team_id, THREAD.channel_id)
EVERY_SECOND = "* * * * * *"


def add_digest(swarm: Swarm, cron: str, created_at: datetime | None = None) -> int:
    with swarm.db.tx() as s:
        row = DigestSchedule(platform=CHANNEL[0], team_id=CHANNEL[1], channel_id=CHANNEL[2],
                             cron=cron, created_by="admin", created_at=created_at or utcnow())
        s.add(row)
        s.flush()
        return row.id


def seconds_from_now(*offsets: int) -> str:
    """A cron firing at these seconds from now (each minute): a known number of firings."""
    now = datetime.now().second
    return f"{','.join(str((now + o) % 60) for o in offsets)} * * * * *"


async def test_a_digest_fires_on_its_cron_with_the_channels_figures(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(team_monthly_budget_usd=5.0, approval_sweep_every=timedelta(0))
    since = utcnow() - timedelta(seconds=1)
    finished = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await approve_all(swarm, finished.objective_id)
    cancelled = await swarm.start_objective("Write the FAQ", THREAD, "alice", "evt-2")
    await swarm.join()
    await swarm.cancel(cancelled.objective_id, "alice")
    waiting = await swarm.start_objective("Plan the offsite", THREAD, "alice", "evt-3")
    elsewhere = THREAD.__class__("console", THREAD.team_id, "C-other", "t-9")
    await swarm.start_objective("Another channel's goal", elsewhere, "bob", "evt-4")
    await swarm.join()
    with swarm.db.tx() as s:  # a drift notice of this channel
        s.add(GroundingCheck(objective_id=finished.objective_id, trigger="steps",
                             signal="judge", aligned=False, score=0.2))
    digest_id = add_digest(swarm, EVERY_SECOND, created_at=since)

    clock = clock_for(swarm)
    clock.start()
    try:
        [(row, ev)] = await until(lambda: events(swarm, "Digest"), what="the digest")
    finally:
        clock.shutdown()
    assert isinstance(ev, Digest) and row.thread_key == "console:team-a:general:"
    assert (ev.started, ev.finished, ev.failed, ev.waiting) == (3, 1, 0, 1)
    [pending] = ev.approvals
    assert pending.objective_id == waiting.objective_id and pending.waiting_s >= 0
    assert ev.drift_notices == 1
    with swarm.db.read() as s:
        here = select(Objective.id).where(Objective.channel_id == THREAD.channel_id)
        cost = s.scalar(select(func.sum(LLMCall.cost)).where(LLMCall.objective_id.in_(here)))
        month = s.scalar(select(func.sum(LLMCall.cost)))
        sent = s.get(DigestSchedule, digest_id)
    assert ev.cost == cost and 0 < ev.cost < ev.month_cost == month
    assert ev.month_budget == 5.0 and sent is not None and sent.last_sent_at is not None
    # the next digest counts from the last one: nothing happened since
    again = digests.post_digest(clock, digest_id)
    assert again is not None and (again.started, again.finished, again.drift_notices) == (0, 0, 0)
    assert again.waiting == 1 and len(again.approvals) == 1


async def test_a_pending_approval_is_reminded_then_expires_and_the_objective_pauses(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(approval_sweep_every=timedelta(seconds=0.1),
                       approval_remind_after=timedelta(seconds=0.5),
                       approval_expire_after=timedelta(seconds=3), admins=["admin"])
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    [plan] = swarm.pending_approvals(started.objective_id)
    clock = clock_for(swarm)
    clock.start()
    try:
        [(_, reminder)] = await until(lambda: events(swarm, "ApprovalReminder"),
                                      what="the reminder")
        assert not events(swarm, "ApprovalExpired")
        [(_, expired)] = await until(lambda: events(swarm, "ApprovalExpired"), what="expiry")
    finally:
        clock.shutdown()
    assert isinstance(reminder, ApprovalReminder) and reminder.approval_id == plan.id
    assert 0.5 <= reminder.waiting_s < 3 and reminder.expires_in_s > 0
    assert isinstance(expired, ApprovalExpired) and expired.waited_s >= 3
    assert len(events(swarm, "ApprovalReminder")) == 1  # reminded once
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused" and "expired" in (view.reason or "")
    assert all(st.state == "pending" for st in view.steps)  # nothing of the plan ran
    late = await swarm.decide(plan.id, "alice", True)
    assert not late.ok and "expired" in late.message

    resumed = await swarm.resume(started.objective_id, "admin")
    assert resumed.ok
    [again] = swarm.pending_approvals(started.objective_id)  # the plan is asked again
    assert again.kind == "plan" and again.id != plan.id
    assert len(events(swarm, "PlanProposed")) == 2
    assert (await approve_all(swarm, started.objective_id, "alice")).state == "finished"


async def test_an_expired_step_approval_pauses_and_the_step_is_asked_again_on_resume(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(admins=["admin"])
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    [plan] = swarm.pending_approvals(started.objective_id)
    assert (await swarm.decide(plan.id, "alice", True)).ok
    await swarm.join()
    [step] = swarm.pending_approvals(started.objective_id)
    clock = clock_for(swarm)  # the job function, driven directly at a later time
    later = utcnow() + swarm.settings.approval_expire_after + timedelta(seconds=1)
    assert approvals.sweep_approvals(clock, later) == ([], [step.id])
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused"
    assert {st.key: st.state for st in view.steps}["s5"] == "pending"
    assert (await swarm.resume(started.objective_id, "admin")).ok
    await swarm.join()
    [asked] = swarm.pending_approvals(started.objective_id)
    assert asked.kind == "step" and asked.step_id == step.step_id and asked.id != step.id
    assert (await approve_all(swarm, started.objective_id)).state == "finished"


async def test_a_recurring_goal_starts_an_objective_at_each_firing_and_follows_its_policy(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(approval_sweep_every=timedelta(seconds=0.1))
    clock = clock_for(swarm)
    clock.start()
    cron = seconds_from_now(2, 4)  # set once the clock runs: a slow start misses none
    with swarm.db.tx() as s:
        auto = RecurringGoal(platform="console", team_id="team-a", channel_id="general",
                             cron=cron, goal="Write the weekly report", policy="auto",
                             budget_usd=0.5, tier="fast", created_by="admin")
        deny = RecurringGoal(platform="console", team_id="team-a", channel_id="general",
                             cron=cron, goal="Refresh the pricing page", policy="deny",
                             created_by="admin")
        s.add_all([auto, deny])
    sync_jobs(clock)  # as `/swarm every` does
    try:
        runs = await until(lambda: _runs(swarm) if len(_runs(swarm)) == 4 else None,
                           what="two firings of each")
        await until(lambda: _settled(swarm, runs), what="the policies to apply")
        await asyncio.sleep(0.3)  # a third firing would show now; there is none
        assert len(_runs(swarm)) == 4
    finally:
        clock.shutdown()
    await swarm.join()
    for objective_id, recurring_id in runs:
        view = swarm.view(objective_id)
        assert view is not None and view.requester == f"schedule:{recurring_id}"
        s5 = {st.key: st for st in view.steps}["s5"]  # the risky step
        if recurring_id == auto.id:  # plan approved unattended; the risky step waits
            assert view.state == "running" and s5.state == "awaiting_approval"
            with swarm.db.read() as s:
                ceiling = s.scalar(select(BudgetCeiling.usd).where(
                    BudgetCeiling.key == objective_key(objective_id)))
            assert ceiling == 0.5
        else:  # deny: the risky step is skipped and the rest finishes
            assert view.state == "finished" and s5.state == "skipped"
        with swarm.db.read() as s:  # the auto goal's workers run on the fast tier
            tiers = set(s.scalars(select(LLMCall.tier).where(LLMCall.objective_id == objective_id,
                                                             LLMCall.step_id.is_not(None))))
        assert tiers == ({"fast"} if recurring_id == auto.id else {"worker", "fast"})
    with swarm.db.read() as s:
        decided = list(s.execute(select(Approval.kind, Approval.state, Approval.decided_by)
                                 .where(Approval.state != ApprovalState.PENDING)))
    assert {(k, st) for k, st, _ in decided} == {("plan", "approved"), ("step", "rejected")}


def _runs(swarm: Swarm) -> list[tuple[int, int]]:
    with swarm.db.read() as s:
        return [(r.objective_id, r.recurring_id) for r in s.scalars(select(RecurringRun))]


def _settled(swarm: Swarm, runs: list[tuple[int, int]]) -> bool:
    for objective_id, _ in runs:
        view = swarm.view(objective_id)
        s5 = {st.key: st.state for st in view.steps}.get("s5") if view else None
        if s5 not in ("awaiting_approval", "skipped"):
            return False
    return True


async def test_jobs_survive_a_restart_without_duplicate_jobs_or_firings(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    add_digest(swarm, EVERY_SECOND)
    first = clock_for(swarm)
    first.start()
    ids = first.job_ids()
    await until(lambda: events(swarm, "Digest"), what="a first digest")
    first.shutdown()
    second = clock_for(swarm)  # the next process, on the same store
    second.start()
    try:
        assert second.job_ids() == ids
        assert "digest:1" in ids and "approvals.sweep" in ids and "grounding.sweep" in ids
        with swarm.db.read() as s:
            stored = s.scalar(text(f"select count(*) from {JOBS_TABLE}"))
        assert stored == len(ids)
        await until(lambda: len(events(swarm, "Digest")) >= 3, what="more digests")
    finally:
        second.shutdown()
    sent = [ev.since for _, ev in events(swarm, "Digest")]  # each firing sent once
    assert sent == sorted(set(sent))


async def test_a_clock_that_was_down_through_three_firings_runs_the_job_once(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    before = clock_for(swarm)
    before.start()
    add_digest(swarm, seconds_from_now(2, 3, 4))
    sync_jobs(before)  # the job is stored with its next firing...
    before.shutdown()  # ...and the bot goes down through all three
    await asyncio.sleep(4.5)
    assert events(swarm, "Digest") == []
    after = clock_for(swarm)
    after.start()
    try:
        await until(lambda: events(swarm, "Digest"), what="the missed digest")
        await asyncio.sleep(0.5)
    finally:
        after.shutdown()
    assert len(events(swarm, "Digest")) == 1  # coalesced: once, not three times


async def test_a_firing_delivered_twice_starts_one_objective(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    with swarm.db.tx() as s:
        goal = RecurringGoal(platform="console", team_id="team-a", channel_id="general",
                             cron="0 9 * * 1", goal="Write the weekly report", policy="ask",
                             created_by="admin")
        s.add(goal)
    clock = clock_for(swarm)
    at = utcnow()
    first = await recurring.start_run(clock, goal.id, at)
    assert first is not None
    assert await recurring.start_run(clock, goal.id, at) is None
    assert _runs(swarm) == [(first, goal.id)]
    await swarm.join()
