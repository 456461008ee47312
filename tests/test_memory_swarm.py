"""Team memory in the swarm: decisions and outcomes are remembered and recalled by the planner."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from memory import Embedder, TeamMemory
from swarm.agents.planner import PlanSpec
from swarm.agents.tools import ToolContext
from swarm.llm.client import CallContext
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef
from tests.conftest import make_settings, migrated
from tests.scenarios import approve_all

TEAM_A = ThreadRef("console", "team-a", "general", "t-1")
TEAM_B = ThreadRef("console", "team-b", "general", "t-2")


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder()


@pytest.fixture
async def swarm_with_memory(tmp_path: Path, sqlite_url: str,
                            embedder: Embedder) -> AsyncIterator[tuple[Swarm, list[list[str]]]]:
    db = migrated(sqlite_url)
    memory = TeamMemory(db.engine, tmp_path / "memory", embedder)
    memory.load()
    swarm = Swarm(make_settings(tmp_path, sqlite_url, memory_enabled=True), db, memory=memory)
    seen: list[list[str]] = []

    async def recording_planner(goal: str, memories: list[str], ctx: CallContext) -> PlanSpec:
        seen.append(memories)
        return await swarm._manager_plan(goal, memories, ctx)

    swarm.planner = recording_planner
    yield swarm, seen
    await swarm.shutdown()
    memory.flush()
    db.close()


async def test_the_planner_recalls_what_the_team_decided_and_achieved_before(
        swarm_with_memory: tuple[Swarm, list[list[str]]]) -> None:
    swarm, seen = swarm_with_memory
    first = await swarm.start_objective("Launch a localized campaign for our SaaS in Japan",
                                        TEAM_A, "alice", "evt-1")
    await swarm.join()
    plan = swarm.pending_approvals(first.objective_id)[0]
    await swarm.decide(plan.id, "alice", True, "keep the budget under 5 million yen")
    view = await approve_all(swarm, first.objective_id)
    await swarm.join()
    assert view.state == "finished"
    assert swarm.memory is not None
    kinds = {m.kind for m in swarm.memory.list("team-a")}
    assert {"goal", "plan", "decision", "critique", "outcome"} <= kinds

    await swarm.start_objective("Plan the Japanese marketing launch for next quarter", TEAM_A,
                                "alice", "evt-2")
    await swarm.join()
    recalled = "\n".join(seen[-1])
    assert "5 million yen" in recalled  # the human decision and its reason
    assert "Launch a localized campaign" in recalled

    await swarm.start_objective("Plan the Japanese marketing launch for next quarter", TEAM_B,
                                "bob", "evt-3")
    await swarm.join()
    assert seen[-1] == [] or all("5 million yen" not in m for m in seen[-1])


async def test_workers_recall_through_their_tool(
        swarm_with_memory: tuple[Swarm, list[list[str]]]) -> None:
    swarm, _ = swarm_with_memory
    assert swarm.memory is not None
    await swarm.memory.remember("team-a", "Legal said: no sweepstakes in Japan", kind="decision")
    async def no_note(text: str) -> None:
        return None

    ctx = ToolContext(1, 1, "team-a", recall=lambda q, k: swarm.recall_texts("team-a", q, k),
                      add_note=no_note)
    answer = await swarm.tools.call("recall", ctx, {"query": "can we run a prize draw?"})
    assert "sweepstakes" in answer


async def test_a_secret_in_a_goal_never_reaches_memory(
        swarm_with_memory: tuple[Swarm, list[list[str]]]) -> None:
    swarm, _ = swarm_with_memory
    secret = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"
    started = await swarm.start_objective(f"Rotate {secret} on staging", TEAM_A, "alice", "e")
    await approve_all(swarm, started.objective_id)
    await swarm.join()
    assert swarm.memory is not None
    texts = [m.text for m in swarm.memory.list("team-a", limit=200)]
    assert texts and not any(secret in t for t in texts)


async def test_a_teams_details_stay_recallable_while_its_parent_sees_only_the_summary(
        swarm_with_memory: tuple[Swarm, list[list[str]]]) -> None:
    swarm, _ = swarm_with_memory
    started = await swarm.start_objective("Launch a localized campaign in Japan [team]", TEAM_A,
                                          "alice", "evt-1")
    view = await approve_all(swarm, started.objective_id)
    await swarm.join()
    assert view.state == "finished"
    team = next(iter(view.teams.values()))
    assert swarm.memory is not None
    kept = {m.text for m in swarm.memory.list("team-a", kind="result", limit=50)
            if m.objective_id == team.id}
    assert {f"Team #{team.id}, '{st.title}': {st.output}" for st in team.steps} == kept
    found = await swarm.recall_texts("team-a", "review of security, privacy and legal risks", 3)
    assert any(text.startswith(f"Team #{team.id}, 'Review risks") for text in found)
