"""Team memory stories: remember, recall by meaning, forget, survive restarts, stay per team."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from memory import Embedder, IndexConfig, TeamIndex, TeamMemory
from memory.index_file import index_path
from memory.tables import memory_tables

PG_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)

DECISION = (
    "We decided to use PostgreSQL rather than MongoDB as the database for the billing service."
)
UNRELATED = [
    "The office coffee machine on the third floor is broken again.",
    "Marketing wants the launch video subtitled in Japanese by Friday.",
    "Alice is on vacation for the whole of next week.",
    "The quarterly all-hands meeting moves to the big conference room.",
    "Our logo should use the darker shade of blue from the brand guide.",
    "Customer interviews showed that onboarding emails are too long.",
]

MakeMemory = Callable[..., TeamMemory]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    loaded = Embedder()
    loaded.encode_sync(["warm up"])
    return loaded


def _postgres_engine() -> sa.Engine | None:
    for url in PG_URLS:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                return engine
        except sa.exc.OperationalError:
            engine.dispose()
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'threadswarm.db'}")
    else:
        found = _postgres_engine()
        if found is None:
            message = f"PostgreSQL does not answer at {PG_URLS[0]} (nor as root)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        engine = found
    yield engine
    engine.dispose()


@pytest.fixture
def make_memory(engine: sa.Engine, tmp_path: Path, embedder: Embedder) -> Iterator[MakeMemory]:
    """Builds TeamMemory objects on one engine, one index dir and one fresh table."""
    table = f"memory_test_{uuid.uuid4().hex[:8]}"

    def make(**options: object) -> TeamMemory:
        options.setdefault("flush_delay", None)
        return TeamMemory(
            engine,
            tmp_path / "index",
            embedder,
            table_name=table,
            **options,  # type: ignore[arg-type]
        )

    yield make
    memory_tables(table).metadata.drop_all(engine)


async def _remember_unrelated(memory: TeamMemory, team: str) -> list[int]:
    return await memory.remember_many(team, [(text, "note") for text in UNRELATED])


async def test_recall_finds_a_paraphrase_of_a_decision_above_unrelated_memories(
    make_memory: MakeMemory,
) -> None:
    memory = make_memory()
    await _remember_unrelated(memory, "T1")
    decision_id = await memory.remember("T1", DECISION, kind="decision", author="U42")

    recalled = await memory.recall("T1", "Which database did we pick for billing?", k=3)

    assert recalled[0].id == decision_id
    assert recalled[0].kind == "decision" and recalled[0].author == "U42"
    assert recalled[0].score > recalled[1].score + 0.2


async def test_recall_prefers_the_newer_of_two_equal_memories(make_memory: MakeMemory) -> None:
    memory = make_memory()
    old = datetime.now(UTC) - timedelta(days=90)
    old_id = await memory.remember("T1", DECISION, kind="decision", created_at=old)
    new_id = await memory.remember("T1", DECISION, kind="decision")

    recalled = await memory.recall("T1", "billing database", k=2)

    assert [item.id for item in recalled] == [new_id, old_id]


async def test_many_concurrent_remembers_all_land_and_are_recalled(
    make_memory: MakeMemory,
) -> None:
    memory = make_memory()
    texts = [DECISION, *UNRELATED]

    ids = await asyncio.gather(*(memory.remember("T1", t, kind="note") for t in texts))

    assert len(set(ids)) == len(texts) and memory.index_of("T1").ntotal == len(texts)
    recalled = await memory.recall("T1", "Which database did we pick for billing?", k=1)
    assert recalled[0].id == ids[0]


async def test_forget_removes_a_memory_from_recall_and_from_the_index(
    make_memory: MakeMemory,
) -> None:
    memory = make_memory()
    await _remember_unrelated(memory, "T1")
    decision_id = await memory.remember("T1", DECISION, kind="decision")
    index = memory.index_of("T1")
    assert decision_id in index and index.ntotal == len(UNRELATED) + 1

    assert await memory.forget("T1", decision_id) is True

    recalled = await memory.recall("T1", "Which database did we pick for billing?", k=10)
    assert decision_id not in [item.id for item in recalled]
    assert decision_id not in index and index.ntotal == len(UNRELATED)
    assert await memory.forget("T1", decision_id) is False


async def test_a_restart_keeps_every_memory(make_memory: MakeMemory) -> None:
    memory = make_memory()
    kept = await _remember_unrelated(memory, "T1")
    memory.flush()
    # Changes after the last flush live only in SQL; the restart must still see them.
    late_id = await memory.remember("T1", DECISION, kind="decision")
    assert await memory.forget("T1", kept[0])

    restarted = make_memory()
    restarted.load()

    listed = {item.id for item in restarted.list("T1")}
    assert listed == set(kept[1:]) | {late_id}
    assert set(restarted.index_of("T1").ids().tolist()) == listed
    recalled = await restarted.recall("T1", "Which database did we pick for billing?", k=1)
    assert recalled[0].id == late_id


async def test_a_truncated_index_file_is_rebuilt_at_load(
    make_memory: MakeMemory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory()
    await _remember_unrelated(memory, "T1")
    decision_id = await memory.remember("T1", DECISION, kind="decision")
    memory.flush()
    path = index_path(tmp_path / "index", memory.tables.items.name, "T1")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    caplog.set_level(logging.INFO, logger="memory")
    restarted = make_memory()
    restarted.load()

    rebuilt = [r for r in caplog.records if r.getMessage().startswith("memory.index.rebuilt")]
    assert len(rebuilt) == 1 and "team=T1" in rebuilt[0].getMessage()
    assert restarted.index_of("T1").ntotal == len(UNRELATED) + 1
    recalled = await restarted.recall("T1", "Which database did we pick for billing?", k=1)
    assert recalled[0].id == decision_id
    restarted.flush()
    assert make_memory().index_of("T1").ntotal == len(UNRELATED) + 1


async def test_an_index_file_of_another_database_is_not_trusted(
    make_memory: MakeMemory, engine: sa.Engine
) -> None:
    memory = make_memory()
    await memory.remember("T1", "The staging cluster runs in Frankfurt.", kind="note")
    memory.flush()
    memory.tables.metadata.drop_all(engine)  # the database is recreated, the index dir stays

    fresh = make_memory()
    decision_id = await fresh.remember("T1", DECISION, kind="decision")

    recalled = await fresh.recall("T1", "Where does staging run?", k=5)
    assert [item.id for item in recalled] == [decision_id]
    assert fresh.index_of("T1").ntotal == 1


async def test_team_a_never_recalls_team_b_memories(make_memory: MakeMemory) -> None:
    memory = make_memory()
    b_id = await memory.remember("team-b", DECISION, kind="decision")
    a_ids = await _remember_unrelated(memory, "team-a")

    recalled = await memory.recall("team-a", "Which database did we pick for billing?", k=10)

    assert {item.id for item in recalled} <= set(a_ids)
    assert all(item.team == "team-a" for item in recalled)
    assert b_id not in memory.index_of("team-a")
    assert await memory.forget("team-a", b_id) is False
    assert [item.id for item in memory.list("team-b")] == [b_id]
    assert memory.teams() == ["team-a", "team-b"]


async def test_a_selective_filter_still_finds_its_match_among_many_closer_items(
    make_memory: MakeMemory, caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory()
    decision_id = await memory.remember("T1", DECISION, kind="decision", objective_id=7)
    notes = [f"Reminder {i}: water the plants in meeting room {i}." for i in range(60)]
    await memory.remember_many("T1", [(text, "note") for text in notes], objective_id=8)

    caplog.set_level(logging.DEBUG, logger="memory")
    query = "Who waters the plants in the meeting rooms?"
    by_kind = await memory.recall("T1", query, k=1, kinds=["decision"])
    by_objective = await memory.recall("T1", query, k=3, objective_id=7)

    assert [item.id for item in by_kind] == [decision_id]
    assert [item.id for item in by_objective] == [decision_id]
    exact = [r for r in caplog.records if r.getMessage().startswith("memory.recall.exact")]
    assert len(exact) == 2  # both went past the over-fetch to the exact search


async def test_the_hnsw_index_honours_forget_and_filters(
    make_memory: MakeMemory, caplog: pytest.LogCaptureFixture
) -> None:
    memory = make_memory(index_config=IndexConfig(hnsw_threshold=16))
    notes = [f"Status note {i}: the weekly report for region {i} was sent." for i in range(40)]
    await memory.remember_many("T1", [(text, "note") for text in notes], objective_id=1)
    decision_id = await memory.remember("T1", DECISION, kind="decision", objective_id=2)
    plan_ids = await memory.remember_many(
        "T1",
        [("Plan: migrate billing data to PostgreSQL over two weekends.", "plan")] * 2,
        objective_id=3,
    )
    index = memory.index_of("T1")
    assert index.kind == "hnsw"

    assert await memory.forget("T1", decision_id)
    assert decision_id not in index
    recalled = await memory.recall("T1", "billing database decision", k=50)
    assert decision_id not in [item.id for item in recalled]
    assert await memory.recall("T1", "billing database", k=5, kinds=["decision"]) == []

    plans = await memory.recall("T1", "billing database", k=5, kinds=["plan"])
    assert sorted(item.id for item in plans) == sorted(plan_ids)
    only_three = await memory.recall("T1", "weekly report", k=5, objective_id=3)
    assert {item.objective_id for item in only_three} == {3}

    assert await memory.forget_objective("T1", 3) == 2
    assert all(plan_id not in index for plan_id in plan_ids)
    memory.flush()

    caplog.set_level(logging.INFO, logger="memory")
    restarted = make_memory(index_config=IndexConfig(hnsw_threshold=16))
    restarted.load()
    assert not [r for r in caplog.records if "memory.index.re" in r.getMessage()]
    reopened = restarted.index_of("T1")
    assert reopened.kind == "hnsw" and reopened.ntotal == len(notes)
    recalled = await restarted.recall("T1", "billing database", k=50)
    assert {item.id for item in recalled}.isdisjoint({decision_id, *plan_ids})


def test_hnsw_tombstones_are_compacted_away_without_re_embedding() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = TeamIndex(8, IndexConfig(hnsw_threshold=50, max_tombstone_fraction=0.1))
    index.add(range(1, 201), vectors)
    assert index.kind == "hnsw"

    index.remove(range(1, 16))  # 15 of 200: tombstones, still filtered at query time
    assert index.stored == 200 and index.ntotal == 185
    assert all(hit not in range(1, 16) for hit, _ in index.search(vectors[0], 20))

    index.remove(range(16, 31))  # past 10%: the graph is rebuilt from its own vectors
    assert index.stored == index.ntotal == 170 and not index.tombstones
    assert index.search(vectors[100], 1)[0][0] == 101


# A fresh interpreter: whatever this test session imported before must not count.
DEFERRED_IMPORTS_CHECK = """
import sys
import numpy as np
import torch
from memory import Embedder

Embedder().encode_sync(["x"])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy"})
assert not loaded, f"loading the model imported {loaded}"

from sentence_transformers.util import manhattan_sim
from transformers.loss.loss_for_object_detection import linear_sum_assignment

sparse = torch.tensor([[1.0, 0.0, 2.0]]).to_sparse()
assert manhattan_sim(sparse, torch.tensor([[0.0, 1.0, 2.0]]).to_sparse()).item() == -2.0
rows, cols = linear_sum_assignment(np.array([[4.0, 1.0], [2.0, 8.0]]))
assert list(cols) == [1, 0]
"""


def test_the_model_loads_without_sklearn_and_scipy_yet_their_callers_still_work() -> None:
    """sentence-transformers imports them at load for sparse and training paths only: they
    stay unloaded (~70 MB resident, see memory/deferred_imports.py) until such a path runs."""
    subprocess.run([sys.executable, "-c", DEFERRED_IMPORTS_CHECK], check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[1],
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def test_a_memory_another_process_remembers_or_forgets_reaches_this_ones_recall(
    make_memory: MakeMemory, tmp_path: Path
) -> None:
    """A web process and a worker share the database, not the index: each one's recall sees
    what the other remembered, and stops seeing what it forgot, once its index is refreshed."""
    here = make_memory(refresh_s=0.0)
    await _remember_unrelated(here, "T1")
    assert await here.recall("T1", "Which database did we pick for billing?", k=1)
    elsewhere = make_memory()
    elsewhere.index_dir = tmp_path / "other-machine"  # its own index files, as on another host

    decided = await elsewhere.remember("T1", DECISION, kind="decision")
    recalled = await here.recall("T1", "Which database did we pick for billing?", k=1)
    assert [m.id for m in recalled] == [decided]

    assert await elsewhere.forget("T1", decided)
    recalled = await here.recall("T1", "Which database did we pick for billing?", k=3)
    assert decided not in {m.id for m in recalled}
    assert decided not in set(here.index_of("T1").ids().tolist())
