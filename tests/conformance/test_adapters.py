"""The scenarios every chat adapter passes, each through its own fake platform: a new platform
is done when it passes them. Console on SQLite; Slack and Discord on SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from swarm.events import ObjectiveFinished, StepResult
from swarm.store.models import OutboxEvent
from tests.conformance.platforms import PLATFORMS, Platform, wait_for
from tests.conftest import _pg_schema_url

RUNS = [("console", "sqlite"), ("slack", "sqlite"), ("slack", "postgresql"),
        ("discord", "sqlite"), ("discord", "postgresql")]


@pytest.fixture(params=RUNS, ids=[f"{p}-{d}" for p, d in RUNS])
def run_on(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str]]:
    name, database = request.param
    if database == "sqlite":
        yield name, f"sqlite:///{tmp_path / 'threadswarm.db'}"
    else:
        for url in _pg_schema_url():
            yield name, url


@pytest.fixture
async def platform(run_on: tuple[str, str], tmp_path: Any) -> AsyncIterator[Platform]:
    """The platform, not started yet: each scenario starts it with what it needs."""
    name, url = run_on
    driver: Platform = PLATFORMS[name](tmp_path, url)
    yield driver
    await driver.close()


def only_objective(platform: Platform) -> int:
    views = platform.runtime.swarm.objectives()
    assert len(views) == 1
    return views[0].id


async def run_to_the_end(platform: Platform, oid: int, via: str = "button") -> str:
    """s5 (a developer step) asks its own approval: approve it, and read the results."""
    step = await platform.step_approval()
    await platform.decide(step, user=platform.alice, via=via)
    return await platform.results(oid)


async def test_a_mention_is_planned_approved_shown_in_progress_and_answered_with_results(
        platform: Platform) -> None:
    await platform.start(progress_interval_s=1.0)
    # [latency:120]: each model call takes 120 ms, so the run outlasts the 1 s throttle.
    await platform.mention("launch our SaaS in Japan [latency:120]")
    plan = await platform.plan()
    assert "Research the context" in plan.text and "s5" in plan.text
    oid = only_objective(platform)
    await platform.decide(plan, user=platform.alice, via="button")
    decided = await platform.decided(plan)  # the approval shows who decided
    assert "pproved by" in decided and platform.alice in decided
    results = await run_to_the_end(platform, oid)
    assert "Draft the deliverable" in results
    assert platform.runtime.swarm.view(oid).state == "finished"  # type: ignore[union-attr]
    shown = await wait_for(lambda: (p := platform.progress()) and "5/5" in p[-1][1] and p,
                           "the progress showing every step done")
    assert "tokens" in shown[-1][1] and "$" in shown[-1][1]
    if platform.edits_in_place:
        with platform.runtime.db.read() as s:
            step_events = int(s.scalar(select(func.count()).select_from(OutboxEvent)
                                       .where(OutboxEvent.progress.is_(True))) or 0)
        assert 3 <= len(shown) < step_events, "edited in place, and runs of events coalesced"
        times = [at for at, _ in shown]
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.99, \
            "no more than about one progress edit a second per thread"


async def test_a_reaction_or_the_prompt_approves(platform: Platform) -> None:
    await platform.start()
    await platform.mention("launch our SaaS in Japan")
    plan = await platform.plan()
    oid = only_objective(platform)
    await platform.decide(plan, user=platform.alice, via="reaction")
    results = await run_to_the_end(platform, oid, via="reaction")
    assert f"Objective #{oid} finished" in results


async def test_a_non_approver_is_refused_and_nothing_changes(platform: Platform) -> None:
    await platform.start()
    await platform.mention("launch our SaaS in Japan")
    plan = await platform.plan()
    oid = only_objective(platform)
    await platform.decide(plan, user=platform.mallory, via="button")
    assert "Only the requester" in await platform.refusal(platform.mallory)
    if platform.reactions:
        await platform.decide(plan, user=platform.mallory, via="reaction")
        assert "Only the requester" in await platform.refusal(platform.mallory)
    await platform.runtime.settle()
    assert platform.runtime.swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    assert len(platform.runtime.swarm.pending_approvals(oid)) == 1


async def test_a_duplicate_delivery_starts_nothing_twice(platform: Platform) -> None:
    await platform.start()
    mention = await platform.mention("launch our SaaS in Japan")
    await platform.redeliver(mention)
    await platform.plan()
    await platform.runtime.settle()
    assert len(platform.runtime.swarm.objectives()) == 1
    assert platform.accepted_count() == 1


async def test_an_approval_after_a_restart_works_in_the_new_process(
        platform: Platform) -> None:
    await platform.start()
    mention = await platform.mention("launch our SaaS in Japan")
    plan = await platform.plan()
    oid = only_objective(platform)
    await platform.restart()  # a new process on the same database
    await platform.redeliver(mention)
    if platform.name == "console":
        plan = await platform.plan()  # `resume` asks again
    await platform.decide(plan, user=platform.alice, via="button")
    await run_to_the_end(platform, oid)
    assert [v.id for v in platform.runtime.swarm.objectives()] == [oid]
    assert platform.runtime.swarm.view(oid).state == "finished"  # type: ignore[union-attr]
    assert platform.accepted_count() == 1


async def test_a_workers_question_is_answered_by_a_reply(platform: Platform) -> None:
    await platform.start()
    mention = await platform.mention("ask about the budget and launch in Japan")
    plan = await platform.plan()
    oid = only_objective(platform)
    await platform.decide(plan, user=platform.alice, via="button")
    question = await platform.question()
    assert "What budget" in question.text
    await platform.reply(mention, question, "About 50k EUR for the first quarter")
    await run_to_the_end(platform, oid)
    view = platform.runtime.swarm.view(oid)
    assert view is not None and view.state == "finished"
    analysis = next(st for st in view.steps if st.key == "s2")
    assert "About 50k EUR for the first quarter" in (analysis.output or "")


async def test_a_rate_limited_post_is_waited_out_and_arrives_once(platform: Platform) -> None:
    if not platform.rate_limits:
        pytest.skip(f"the {platform.name} has no rate limits")
    await platform.start()
    platform.fail_next_posts(1)
    await platform.mention("launch our SaaS in Japan")
    await platform.plan()
    assert platform.post_statuses("On it") == [429, 200]
    assert platform.accepted_count() == 1


async def test_output_over_the_platforms_limit_arrives_whole_in_messages_within_it(
        platform: Platform) -> None:
    await platform.start()
    await platform.mention("launch our SaaS in Japan")
    await platform.plan()
    oid = only_objective(platform)
    limit = platform.limit or 2000
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 20 for i in range(int(limit / 100))]
    event = ObjectiveFinished(oid, "finished", "All done.", [
        StepResult("Write it up", "writer", "finished", "\n\n".join(paragraphs))])
    pieces = await platform.deliver_results(event)
    if platform.limit is not None:
        assert len(pieces) >= 2 and all(len(p) <= platform.limit for p in pieces)
    shown = "\n".join(pieces)
    for i in range(len(paragraphs)):
        assert f"Paragraph {i}: lorem" in shown, f"paragraph {i} is lost"
    if platform.edits_in_place:  # a chat platform: what was posted is never posted again
        assert await platform.deliver_results(event) == [], "redelivered: nothing twice"
