"""A process killed with SIGKILL mid-objective; `threadswarm resume` finishes the work."""
from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from swarm.store.models import Objective, Step, StepRun
from tests.conftest import migrated
from tests.processes import cli, env, kill_when

GOAL = "Launch a localized campaign for our SaaS in Japan"


def test_sigkill_mid_objective_then_resume_runs_no_finished_step_twice(
        tmp_path: Path, db_url: str) -> None:
    migrated(db_url).close()  # `run` migrates SQLite by itself, PostgreSQL is migrated first
    proc = subprocess.Popen(cli("run", "--yes", GOAL), env=env(tmp_path, db_url, 300),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = create_engine(db_url)
    # Kill it while the draft (s3) runs: s1 and s2 are finished, s3 is cut off mid-call.
    kill_when(proc, engine, lambda s: s.scalar(select(Step.state).where(Step.key == "s3"))
              == "running")
    with Session(engine) as s:
        before = {st.key: st.state for st in s.scalars(select(Step))}
        finished_runs = {r.id for r in s.scalars(select(StepRun).where(
            StepRun.state == "accepted"))}
    assert before["s1"] == before["s2"] == "finished" and before["s3"] == "running"

    resumed = subprocess.run(cli("resume", "--yes"), env=env(tmp_path, db_url, 300),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with Session(engine) as s:
        assert s.scalar(select(Objective.state)) == "finished"
        for step in s.scalars(select(Step)):
            accepted = s.scalar(select(func.count()).select_from(StepRun).where(
                StepRun.step_id == step.id, StepRun.state == "accepted"))
            assert accepted == 1, f"step {step.key} was accepted {accepted} times"
        # the runs accepted before the kill are the same rows: nothing finished ran again
        assert finished_runs <= {r.id for r in s.scalars(select(StepRun).where(
            StepRun.state == "accepted"))}
        assert s.scalar(select(func.count()).select_from(StepRun).where(
            StepRun.state == "abandoned")) >= 1
    engine.dispose()
