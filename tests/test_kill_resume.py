"""Issue 11: SIGKILL at any moment, then `threadswarm resume`, ends as an uninterrupted run."""
from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Engine, create_engine, or_, select
from sqlalchemy.orm import Session

from bot import cli as threadswarm
from swarm.config import Settings
from swarm.store.audit import verify_chain
from swarm.store.models import Approval, AuditEntry, LLMCall, Objective, OutboxEvent, Step, StepRun
from swarm.store.spend import objective_spend
from tests.conftest import _pg_schema_url, migrated
from tests.processes import Moment, cli, env, kill_when

GOAL = "Launch a localized campaign for our SaaS in Japan"
LATENCY_MS = 150  # per model call: the draft (s3, two attempts, four calls) runs for 0.6 s
SLOW_PLANNING_MS = 1500  # the process killed while planning: its planner call lasts this long
# the two resumes at once: their starts differ by up to a second, and the work left must
# outlast that, or one of them finds it done and the other never had a rival
OVERLAP_MS = 400
EXIT_S = 60.0  # generous: a start takes 5-7 s (importing litellm), the work 2-5 s more


# -- the moments a kill hits --------------------------------------------------------------
# Each is a state the process stays in long enough to be seen in the database, rather than a
# random instant: the test never misses its moment, and a failure reproduces at the same one.
def planning(s: Session) -> bool:
    """The manager is mid-call (one objective per database, so no id is needed)."""
    return s.scalar(select(Objective.state)) == "planning"


def drafting(s: Session) -> bool:
    """s1 and s2 finished; the draft (s3) is mid-call."""
    return s.scalar(select(Step.state).where(Step.key == "s3")) == "running"


def at_the_rollout_prompt(s: Session) -> bool:
    """The review (s4) finished; the risky rollout (s5) waits at the prompt for its approval."""
    states = dict(s.execute(select(Step.key, Step.state)).all())
    return states.get("s4") == "finished" and states.get("s5") == "awaiting_approval"


def finished(s: Session) -> bool:
    """The objective finished; its process has not exited yet (it takes a second or two)."""
    return s.scalar(select(Objective.state)) == "finished"


# -- what an objective ended as ---------------------------------------------------------
class StepEnd(NamedTuple):
    key: str
    role: str
    state: str
    output: str | None
    accepted_runs: int
    accepted_calls: tuple[int, int, int]  # its accepted run's calls: count, prompt, completion


@dataclass(frozen=True)
class Outcome:
    """An objective's end in the terms an uninterrupted run fixes (no ids, no totals)."""

    state: str
    steps: list[StepEnd]
    approvals: list[tuple[str, str]]  # kind, state


def outcome(engine: Engine) -> Outcome:
    with Session(engine) as s:  # one objective per database
        accepted = list(s.scalars(select(StepRun).where(StepRun.state == "accepted")))
        per_step = Counter(r.step_id for r in accepted)
        calls: dict[int, list[LLMCall]] = {r.step_id: list(s.scalars(
            select(LLMCall).where(LLMCall.run_id == r.id))) for r in accepted}
        steps = [StepEnd(st.key, st.role, st.state, st.output, per_step[st.id],
                         (len(c := calls.get(st.id, [])), sum(x.prompt_tokens for x in c),
                          sum(x.completion_tokens for x in c)))
                 for st in s.scalars(select(Step).order_by(Step.plan_version, Step.position))]
        approvals = [(a.kind, a.state) for a in s.scalars(select(Approval).order_by(Approval.id))]
        return Outcome(str(s.scalar(select(Objective.state))), steps, approvals)


def accepted_runs(engine: Engine) -> dict[int, str | None]:
    with Session(engine) as s:
        return dict(s.execute(select(StepRun.id, StepRun.output).where(
            StepRun.state == "accepted")).all())


# -- the invariants ------------------------------------------------------------------------
# the events and audit entries that happen once per objective, approval or step
_EVENT_ONCE = {"ObjectiveAccepted": "objective_id", "PlanProposed": "objective_id",
               "ObjectiveFinished": "objective_id", "ApprovalRequested": "approval_id",
               "ApprovalDecided": "approval_id", "StepFinished": "step_id"}
_AUDIT_ONCE = {"objective.created": None, "plan.proposed": None, "objective.finished": None,
               "approval.requested": "approval", "approval.decided": "approval"}


def _twice(counts: Counter[tuple[str, object]]) -> list[tuple[str, object]]:
    return [key for key, n in counts.items() if n > 1]


def assert_consistent(engine: Engine) -> None:
    """What holds at every moment, right after a kill too: nothing recorded twice, every call
    booked to a run of its own step, the audit chain intact."""
    with Session(engine) as s:
        runs = s.execute(select(StepRun.step_id, StepRun.attempt, StepRun.state)).all()
        assert len({(step, attempt) for step, attempt, _ in runs}) == len(runs)
        assert not _twice(Counter(("accepted", step) for step, _, st in runs
                                  if st == "accepted")), "a finished step ran again"
        events = s.execute(select(OutboxEvent.kind, OutboxEvent.payload)).all()
        assert not _twice(Counter((kind, payload[_EVENT_ONCE[kind]]) for kind, payload in events
                                  if kind in _EVENT_ONCE)), "an event was recorded twice"
        entries = s.execute(select(AuditEntry.action, AuditEntry.objective_id,
                                   AuditEntry.detail)).all()
        assert not _twice(Counter(
            (action, detail[key] if (key := _AUDIT_ONCE[action]) else oid)
            for action, oid, detail in entries if action in _AUDIT_ONCE)), \
            "a decision or transition was audited twice"
        stray = s.execute(select(LLMCall.id, LLMCall.step_id, LLMCall.run_id)
                          .outerjoin(StepRun, StepRun.id == LLMCall.run_id)
                          .where(LLMCall.step_id.is_not(None),
                                 or_(StepRun.id.is_(None), StepRun.step_id != LLMCall.step_id))
                          ).all()
        assert not stray, f"calls booked to no run of their step: {stray}"
        report = verify_chain(s)
        assert report.ok, report


def assert_as_uninterrupted(engine: Engine, reference: Outcome,
                            kept: dict[int, str | None]) -> None:
    """The objective ended as the uninterrupted run did, no finished step ran again, nothing
    was recorded twice, nothing is left running, and its spend is the calls it booked."""
    assert_consistent(engine)
    assert outcome(engine) == reference
    # the runs accepted before a kill are the same rows with the same output: not run again
    assert kept.items() <= accepted_runs(engine).items()
    with Session(engine) as s:
        assert not s.scalars(select(StepRun.id).where(StepRun.state == "running")).all()
        assert not s.scalars(select(Step.id).where(Step.claim_token.is_not(None))).all()
        oid = s.scalar(select(Objective.id))
        assert oid is not None
        calls = s.execute(select(LLMCall.prompt_tokens, LLMCall.completion_tokens, LLMCall.cost)
                          .where(LLMCall.objective_id == oid)).all()
        spend = objective_spend(s, oid)
        assert (spend.calls, spend.tokens) == (len(calls), sum(p + c for p, c, _ in calls))
        assert spend.cost == pytest.approx(sum(cost for _, _, cost in calls))
        told = s.scalar(select(OutboxEvent.payload).where(OutboxEvent.kind == "ObjectiveFinished"))
        assert told is not None  # the thread was told the same totals
        assert (told["tokens"], told["cost"]) == (spend.tokens, pytest.approx(spend.cost))


# -- processes -----------------------------------------------------------------------------
_logs = count(1)


def start(tmp_path: Path, db_url: str, *args: str, latency_ms: int = LATENCY_MS,
          human_away: bool = False) -> subprocess.Popen[bytes]:
    """Start `threadswarm ARGS`, its output in a numbered log. `human_away`: its stdin stays
    open and silent, so an approval prompt waits there until the process is killed."""
    log = tmp_path / f"{next(_logs):02d}-{args[0]}.log"
    with log.open("wb") as out:
        return subprocess.Popen(cli(*args), env=env(tmp_path, db_url, latency_ms),
                                stdin=subprocess.PIPE if human_away else subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


class NeverExited(AssertionError):
    """A process still running at EXIT_S (it was killed then)."""


def exit_code(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=EXIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise NeverExited(f"{proc.args!r} had not exited after {EXIT_S:.0f} s") from None


def run_uninterrupted(tmp: Path, goal: str) -> str:
    """`threadswarm run --yes GOAL` in this process on a fresh database; returns its URL."""
    url = f"sqlite:///{tmp / 'threadswarm.db'}"
    settings = Settings(data_dir=tmp, database_url=url, offline_latency_ms=0,
                        memory_enabled=False)
    args = threadswarm.build_parser().parse_args(["run", "--yes", goal])
    assert asyncio.run(threadswarm.cmd_run(args, settings)) == 0
    return url


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """`threadswarm run --yes GOAL` on a fresh database, never interrupted. In this process: a
    process start costs seconds, and the offline model answers the same at any latency."""
    engine = create_engine(run_uninterrupted(tmp_path_factory.mktemp("uninterrupted"), GOAL))
    try:
        reference = outcome(engine)
        assert_as_uninterrupted(engine, reference, {})  # the invariants hold where nothing died
    finally:
        engine.dispose()
    assert reference.state == "finished"
    assert [(st.key, st.accepted_runs) for st in reference.steps] == [
        ("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1), ("s5", 1)]
    return reference


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


# -- the user story ----------------------------------------------------------------------
@pytest.mark.timeout(5 * EXIT_S)  # five processes one after the other, each given EXIT_S
def test_killed_while_planning_drafting_waiting_and_finished_ends_as_uninterrupted(
        tmp_path: Path, db_url: str, uninterrupted: Outcome,
        request: pytest.FixtureRequest) -> None:
    migrated(db_url).close()  # `run` migrates SQLite by itself, PostgreSQL is migrated first
    engine = create_engine(db_url)
    request.addfinalizer(engine.dispose)
    kept: dict[int, str | None] = {}  # accepted runs seen after each kill: none may change

    def kill(proc: subprocess.Popen[bytes], moment: Moment) -> None:
        kill_when(proc, engine, moment)
        if proc.stdin is not None:
            proc.stdin.close()
        assert_consistent(engine)
        kept.update(accepted_runs(engine))

    kill(start(tmp_path, db_url, "run", "--yes", GOAL, latency_ms=SLOW_PLANNING_MS), planning)
    kill(start(tmp_path, db_url, "resume", "--yes"), drafting)
    # without --yes nobody answers the rollout's approval prompt: the process waits, is killed
    kill(start(tmp_path, db_url, "resume", human_away=True), at_the_rollout_prompt)
    kill(start(tmp_path, db_url, "resume", "--yes"), finished)
    assert_as_uninterrupted(engine, uninterrupted, kept)
    # resumed once more, there is nothing left to do: it changes nothing, and exits
    try:
        assert exit_code(start(tmp_path, db_url, "resume", "--yes")) == 0
    finally:  # checked even when it hangs, so that a broken invariant is never hidden by it
        assert_as_uninterrupted(engine, uninterrupted, kept)


def test_two_resumes_at_once_after_a_kill_finish_it_once_and_both_exit(
        tmp_path: Path, pg_url: str, uninterrupted: Outcome,
        request: pytest.FixtureRequest) -> None:
    migrated(pg_url).close()
    engine = create_engine(pg_url)
    request.addfinalizer(engine.dispose)
    # killed while the draft runs: both resumes start recovering within milliseconds and find
    # its lease's owner gone; one takes it over, the other must leave the live lease alone and
    # watch; either may then ask for, decide and finish what is left, every write guarded
    kill_when(start(tmp_path, pg_url, "run", "--yes", GOAL), engine, drafting)
    kept = accepted_runs(engine)
    both = [start(tmp_path, pg_url, "resume", "--yes", latency_ms=OVERLAP_MS) for _ in range(2)]
    assert [exit_code(proc) for proc in both] == [0, 0]
    assert_as_uninterrupted(engine, uninterrupted, kept)
