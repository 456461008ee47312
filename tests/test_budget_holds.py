"""Budget holds live in the database: a ceiling holds across processes, and a dead one's hold
lapses."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from swarm.config import Settings
from swarm.llm.budget import Budget, BudgetExceeded
from swarm.store.db import Database
from swarm.store.models import BudgetHold, Objective
from tests.conftest import make_settings, migrated

MODELS = ("offline/rehearsal",)
ASK = [{"role": "user", "content": "OBJECTIVE: x\nSTEP: Say hello\nINSTRUCTIONS: Greet."}]


def one_call_fits(tmp_path: Path, db: Database, **overrides: Any) -> Settings:
    """Settings whose objective ceiling has room for one call's estimate, not two."""
    url = db.engine.url.render_as_string(hide_password=False)
    settings = make_settings(tmp_path, url, llm_max_tokens=200, **overrides)
    estimate = Budget(settings, db).estimate(MODELS, ASK, None, None)
    settings.objective_budget_tokens = int(estimate.tokens * 1.5)
    return settings


def new_objective(db: Database) -> int:
    with db.tx() as s:
        objective = Objective(goal="g", platform="slack", team_id="T1", channel_id="C1",
                              thread_id="1.1", requester="alice", state="running")
        s.add(objective)
    return objective.id


def held(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count(BudgetHold.id))) or 0)


async def test_a_call_in_flight_in_one_process_counts_in_the_others_check(
        tmp_path: Path, db_url: str) -> None:
    one, two = migrated(db_url), Database.connect(db_url)
    try:
        settings = one_call_fits(tmp_path, one)
        first, second = Budget(settings, one), Budget(settings, two)
        oid = new_objective(one)
        hold = await first.reserve(oid, "T1", MODELS, ASK)
        with pytest.raises(BudgetExceeded, match="already spent or in flight"):
            await second.reserve(oid, "T1", MODELS, ASK)
        first.release(hold)  # its call ended without rows (no book): the room is back
        assert held(one) == 0
        assert await second.reserve(oid, "T1", MODELS, ASK) is not None
    finally:
        one.close()
        two.close()


def race(budgets: list[Budget], objective_id: int) -> list[str]:
    """Each budget checks the same objective in a thread of its own, at the same moment."""
    barrier, outcomes = threading.Barrier(len(budgets)), []

    def check(budget: Budget) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(asyncio.run(budget.reserve(objective_id, "T1", MODELS, ASK)))
        except BudgetExceeded as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=check, args=(b,)) for b in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return sorted(type(o).__name__ for o in outcomes)


def test_two_processes_checking_at_the_same_moment_cannot_both_pass(
        tmp_path: Path, db_url: str) -> None:
    databases = [migrated(db_url), Database.connect(db_url)]
    try:
        settings = one_call_fits(tmp_path, databases[0])
        budgets = [Budget(settings, db) for db in databases]
        for _ in range(6):
            assert race(budgets, new_objective(databases[0])) == ["BudgetExceeded", "Hold"]
    finally:
        for db in databases:
            db.close()


HOLDER = """
import asyncio, sys, time
from swarm.config import Settings
from swarm.llm.budget import Budget
from swarm.store.db import Database

settings = Settings.model_validate_json(sys.argv[1])
budget = Budget(settings, Database.connect(settings.url))
asyncio.run(budget.reserve(int(sys.argv[2]), "T1", ("offline/rehearsal",),
            [{"role": "user", "content": sys.argv[3]}]))
print("held", flush=True)
time.sleep(120)
"""


def first_line(proc: subprocess.Popen[bytes], wanted: bytes) -> bytes:
    """The first line of `proc`'s output that is `wanted` (litellm prints a blank one), or b""
    once it exited."""
    assert proc.stdout is not None
    while (line := proc.stdout.readline()) not in (wanted, b""):
        pass
    return line


@pytest.mark.timeout(300)  # the holder imports litellm: seconds, many on a loaded machine
async def test_the_hold_of_a_killed_process_lapses_at_once(tmp_path: Path, db_url: str) -> None:
    db = migrated(db_url)
    try:
        settings = one_call_fits(tmp_path, db)
        oid = new_objective(db)
        budget = Budget(settings, db)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, settings.model_dump_json(), str(oid),
             str(ASK[0]["content"])], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = await asyncio.to_thread(first_line, holder, b"held\n")
            assert line == b"held\n", holder.stderr.read() if holder.stderr else b""
            with pytest.raises(BudgetExceeded):  # its call is in flight: only one fits
                await budget.reserve(oid, "T1", MODELS, ASK)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
        # killed mid-call: its hold, minutes from expiry, counts no more
        assert await budget.reserve(oid, "T1", MODELS, ASK) is not None
    finally:
        db.close()


async def test_a_hold_lapses_once_its_call_can_no_longer_be_running(tmp_path: Path,
                                                                     db_url: str) -> None:
    db = migrated(db_url)
    try:
        # at most 2 x 0.25 s: one attempt of one model, timed out at 0.25 s
        settings = one_call_fits(tmp_path, db, llm_timeout_s=0.25, llm_retries=0)
        oid = new_objective(db)
        stuck, other = Budget(settings, db), Budget(settings, db)  # two swarms, one process
        assert await stuck.reserve(oid, "T1", MODELS, ASK) is not None  # never released
        with pytest.raises(BudgetExceeded):
            await other.reserve(oid, "T1", MODELS, ASK)
        time.sleep(0.6)
        assert await other.reserve(oid, "T1", MODELS, ASK) is not None
    finally:
        db.close()
