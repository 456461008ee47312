"""The edges of an objective's life: a crash while planning, changed instructions, a dropped
connection, revisions, and the thread lookups' index."""
from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from swarm.agents.planner import PlanSpec, StepSpec
from swarm.llm.client import CallContext
from swarm.services.objectives import Swarm
from swarm.store.models import Intervention, Objective, Question, Step
from tests.conftest import PG_URL, make_settings, migrated
from tests.fakes.openai_server import FakeOpenAI
from tests.scenarios import THREAD, approve_all, outbox_kinds, run_goal
from tests.test_spend import over_fake

GOAL = "Launch a localized campaign for our SaaS in Japan"


async def test_an_unexpected_error_while_planning_fails_the_objective_visibly(
        make_swarm: Callable[..., Swarm], caplog: pytest.LogCaptureFixture) -> None:
    swarm = make_swarm()

    async def broken_planner(goal: str, memories: list[str], ctx: CallContext) -> PlanSpec:
        raise ConnectionResetError("a network error outside litellm")

    swarm.planner = broken_planner
    with caplog.at_level(logging.ERROR):
        oid = (await swarm.start_objective(GOAL, THREAD, "alice", "e1")).objective_id
        await swarm.join()
    view = swarm.view(oid)
    assert view is not None and view.state == "failed"
    assert "internal error while planning: ConnectionResetError" in (view.reason or "")
    assert outbox_kinds(swarm, oid)[-2:] == ["Notice", "ObjectiveFinished"]
    assert any("plan.crashed" in r.getMessage() for r in caplog.records)
    assert not swarm.busy


async def test_a_retried_risky_step_asks_again_before_its_new_instructions_run(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    # every worker request for the (risky) rollout fails, however often it is retried
    openai_server.fail_when("STEP: Prepare the rollout", "TASK: Produce the step's output")
    swarm = make_swarm(**over_fake(openai_server, llm_retries=0,
                                   max_troubleshoots_per_step=1))
    view = await swarm.start_objective(GOAL + " [troubleshoot:retry]", THREAD, "alice", "e1")
    oid = view.objective_id
    await swarm.join()
    for approval in swarm.pending_approvals(oid):  # the plan, then the first rollout approval
        assert (await swarm.decide(approval.id, "alice", True)).ok
        await swarm.join()
    while (pending := swarm.pending_approvals(oid)) and "new instructions" not in \
            pending[0].title:
        assert (await swarm.decide(pending[0].id, "alice", True)).ok
        await swarm.join()

    [again] = swarm.pending_approvals(oid)
    assert again.kind == "step" and "new instructions" in again.title
    with swarm.db.read() as s:
        step = s.scalar(select(Step).where(Step.id == again.step_id))
        assert step is not None and step.key == "s5" and step.state == "awaiting_approval"
        assert step.instructions[:50] in again.title
    # the new instructions have not reached the model: they wait for the humans
    rollout = [r for r in openai_server.requests() if "STEP: Prepare the rollout" in r.text
               and "TASK: Produce the step's output" in r.text]
    assert rollout and not any(step.instructions in r.text for r in rollout)


async def test_a_human_answer_uses_up_no_revision(make_swarm: Callable[..., Swarm]) -> None:
    async def planner(goal: str, memories: list[str], ctx: CallContext) -> PlanSpec:
        return PlanSpec(rationale="one draft", steps=[StepSpec(
            key="s1", title="Draft the announcement", role="writer",
            instructions="Ask the humans for the tone. Then write the announcement.")])

    swarm = make_swarm(max_revisions=1)
    swarm.planner = planner
    oid = (await swarm.start_objective(GOAL, THREAD, "alice", "e1")).objective_id
    view = await approve_all(swarm, oid)
    assert [st.state for st in view.steps] == ["waiting_human"]
    assert await swarm.reply(THREAD, "alice", "Warm and short.")
    view = await approve_all(swarm, oid)

    # answered (attempt 2), rejected once by the critic for its TODO, revised (attempt 3)
    assert view.state == "finished" and view.steps[0].attempts == 3
    with swarm.db.read() as s:
        assert s.scalar(select(sa.func.count()).select_from(Intervention)) == 0


@pytest.fixture
def pg_app_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL server drops connections; SQLite has none to drop")
    return f"{db_url}&application_name=ts_drop_test"


async def test_a_dropped_postgresql_connection_fails_no_step(tmp_path, pg_app_url: str) -> None:  # type: ignore[no-untyped-def]
    db = migrated(pg_app_url)
    swarm = Swarm(make_settings(tmp_path, pg_app_url), db)
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        await run_goal(swarm, "Write a press release")  # the hot path keeps its connection
        with admin.connect() as c:  # a restart or failover drops every connection
            killed = c.execute(sa.text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where application_name = 'ts_drop_test'")).scalar()
        assert killed
        view = await run_goal(swarm, "Write another press release", key="e2",
                              thread=THREAD.__class__("console", "T", "C", "2"))
        assert view.state == "finished"
        assert all(st.state == "finished" and not st.error for st in view.steps)
    finally:
        await swarm.shutdown()
        db.close()
        admin.dispose()


def test_the_open_question_lookup_uses_the_thread_index(sqlite_url: str) -> None:
    db = migrated(sqlite_url)
    query = (select(Question.id).join(Objective, Objective.id == Question.objective_id)
             .where(Objective.platform == "slack", Objective.team_id == "T",
                    Objective.channel_id == "C", Objective.thread_id == "1",
                    Question.closed_at.is_(None)))
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as c:
        plan = " ".join(str(row[-1]) for row in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    db.close()
    assert "ix_objectives_thread" in plan and "SCAN objectives" not in plan
