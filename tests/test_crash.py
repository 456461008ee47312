"""A process killed with SIGKILL mid-objective; `threadswarm resume` finishes the work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from swarm.models import Objective, Step, StepRun

GOAL = "Launch a localized campaign for our SaaS in Japan"


def _cli(tmp_path: Path, db_url: str, *args: str, latency_ms: int = 300) -> list[str]:
    return [sys.executable, "-m", "bot.cli", *args]


def _env(tmp_path: Path, db_url: str, latency_ms: int) -> dict[str, str]:
    env = dict(os.environ, THREADSWARM_DATA_DIR=str(tmp_path), DATABASE_URL=db_url,
               THREADSWARM_OFFLINE_LATENCY_MS=str(latency_ms), THREADSWARM_MEMORY_ENABLED="false")
    return env


def _wait_for(engine, predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Session(engine) as s:
                if predicate(s):
                    return
        except Exception:  # tables not created yet
            pass
        time.sleep(0.05)
    raise AssertionError("the condition never held")


def test_sigkill_mid_objective_then_resume_runs_no_finished_step_twice(
        tmp_path: Path, db_url: str) -> None:
    env = _env(tmp_path, db_url, latency_ms=300)
    proc = subprocess.Popen(_cli(tmp_path, db_url, "run", "--yes", GOAL), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = create_engine(db_url)
    try:
        # Kill it while the draft (s3) runs: s1 and s2 are finished, s3 is cut off mid-call.
        _wait_for(engine, lambda s: s.scalar(select(Step.state).where(Step.key == "s3"))
                  == "running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with Session(engine) as s:
        before = {st.key: st.state for st in s.scalars(select(Step))}
        finished_runs = {r.id for r in s.scalars(select(StepRun).where(
            StepRun.state == "accepted"))}
    assert before["s1"] == before["s2"] == "finished" and before["s3"] == "running"

    resumed = subprocess.run(_cli(tmp_path, db_url, "resume", "--yes"), env=env,
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
