"""Issue 18: SIGKILL in the middle of a team, then resume: nothing finished runs again, at
either level, and the tree ends as an uninterrupted run of it does."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Engine, and_, create_engine, select
from sqlalchemy.orm import Session

from swarm.store.models import Objective, Step, StepRun
from tests.conftest import migrated
from tests.processes import kill_when
from tests.test_kill_resume import (
    EXIT_S,
    accepted_runs,
    assert_consistent,
    exit_code,
    run_uninterrupted,
    start,
)

GOAL = "Launch a localized campaign for our SaaS in Japan [team]"


def team_drafting(s: Session) -> bool:
    """The team's own s1 and s2 finished; its draft (s3) is mid-call."""
    return s.scalar(select(Step.state).join(Objective, Objective.id == Step.objective_id)
                    .where(Objective.parent_id.is_not(None), Step.key == "s3")) == "running"


def summing_up(s: Session) -> bool:
    """The team finished; the parent's team step is writing its summary."""
    return s.scalar(select(Step.state).join(Objective, Objective.id == Step.objective_id)
                    .where(Objective.parent_id.is_(None), Step.key == "s3",
                           Step.attempts >= 2)) == "running"


class End(NamedTuple):
    objective: int
    depth: int
    key: str
    state: str
    output: str | None
    accepted_runs: int


def tree(engine: Engine) -> tuple[list[tuple[int, int, str]], list[End]]:
    """Every objective (id, depth, state) and step of the tree, in a fixed order."""
    with Session(engine) as s:
        objectives = [(o.id, o.depth, o.state) for o in s.scalars(
            select(Objective).order_by(Objective.id))]
        depth = {oid: d for oid, d, _ in objectives}
        steps = []
        for st in s.scalars(select(Step).order_by(Step.objective_id, Step.plan_version,
                                                  Step.position)):
            accepted = len(s.scalars(select(StepRun.id).where(and_(
                StepRun.step_id == st.id, StepRun.state == "accepted"))).all())
            steps.append(End(st.objective_id, depth[st.objective_id], st.key, st.state,
                             st.output, accepted))
        return objectives, steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[list[tuple[int, int, str]], list[End]]:
    engine = create_engine(run_uninterrupted(tmp_path_factory.mktemp("uninterrupted-team"),
                                             GOAL))
    try:
        reference = tree(engine)
    finally:
        engine.dispose()
    assert reference[0] == [(1, 0, "finished"), (2, 1, "finished")]
    assert [(e.objective, e.key, e.accepted_runs) for e in reference[1]] == [
        (o, f"s{i}", 1) for o in (1, 2) for i in range(1, 6)]
    return reference


@pytest.mark.timeout(3 * EXIT_S)
def test_killed_inside_the_team_and_while_summing_it_up_ends_as_uninterrupted(
        tmp_path: Path, db_url: str, uninterrupted: tuple[list[tuple[int, int, str]], list[End]],
        request: pytest.FixtureRequest) -> None:
    migrated(db_url).close()  # `run` migrates SQLite by itself, PostgreSQL is migrated first
    engine = create_engine(db_url)
    request.addfinalizer(engine.dispose)
    kept: dict[int, str | None] = {}

    def kill(proc: object, moment: object) -> None:
        kill_when(proc, engine, moment)  # type: ignore[arg-type]
        assert_consistent(engine)
        kept.update(accepted_runs(engine))

    kill(start(tmp_path, db_url, "run", "--yes", GOAL), team_drafting)
    kill(start(tmp_path, db_url, "resume", "--yes"), summing_up)
    assert exit_code(start(tmp_path, db_url, "resume", "--yes")) == 0
    assert_consistent(engine)
    assert tree(engine) == uninterrupted  # one team, each step finished once, same outputs
    assert kept.items() <= accepted_runs(engine).items()  # what had finished never ran again
    with Session(engine) as s:
        assert not s.scalars(select(StepRun.id).where(StepRun.state == "running")).all()
        assert not s.scalars(select(Step.id).where(Step.claim_token.is_not(None))).all()
