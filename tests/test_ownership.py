"""Two processes on one database: who owns running work, and of two racing decisions, one wins."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from swarm.engine import attempt as steps
from swarm.services.objectives import Swarm
from swarm.services.policy import Policy
from swarm.store import audit as audit_module
from swarm.store.audit import audit, verify_chain
from swarm.store.db import Database
from swarm.store.models import BudgetHold, LLMCall, OutboxEvent, Step, StepRun, ThreadRef, utcnow
from tests.conftest import make_settings, migrated
from tests.scenarios import approve_all, runs_by_key

GOAL = "Launch a localized campaign for our SaaS in Japan"
THREAD = ThreadRef("slack", "T1", "C1", "100.1")


class Processes:
    """Swarms on one database, each with its own Database (its own connections): two
    processes' worth. `gate()` holds every critic review of one swarm until released."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.swarms: list[Swarm] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.reviewing: dict[int, set[int]] = {}

    def start(self, **overrides: Any) -> Swarm:
        sw = Swarm(make_settings(self.tmp_path, self.url, **overrides), migrated(self.url))
        self.swarms.append(sw)
        return sw

    def gate(self, sw: Swarm) -> asyncio.Event:
        self.gates[id(sw.llm)] = asyncio.Event()
        self.reviewing[id(sw.llm)] = set()
        return self.gates[id(sw.llm)]

    async def in_review(self, sw: Swarm, n: int) -> None:
        while len(self.reviewing[id(sw.llm)]) < n:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for sw in self.swarms:
            for gate in self.gates.values():
                gate.set()
            await sw.shutdown()
            sw.db.close()


@pytest.fixture
async def procs(tmp_path: Path, db_url: str,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Processes]:
    p = Processes(tmp_path, db_url)
    real = steps.review

    async def gated(llm: Any, role: Any, brief: Any, output: str, ctx: Any) -> Any:
        if (gate := p.gates.get(id(llm))) is not None:
            p.reviewing[id(llm)].add(ctx.step_id)
            await gate.wait()
        return await real(llm, role, brief, output, ctx)

    monkeypatch.setattr(steps, "review", gated)
    yield p
    await p.close()


async def started(sw: Swarm, goal: str = GOAL, key: str = "e1",
                  thread: ThreadRef = THREAD) -> int:
    oid = (await sw.start_objective(goal, thread, "alice", key)).objective_id
    await sw.join()
    [plan] = sw.pending_approvals(oid)
    assert (await sw.decide(plan.id, "alice", True)).ok
    return oid


def accepted_runs(sw: Swarm, oid: int) -> dict[str, int]:
    return {k: sum(r.state == "accepted" for r in rs) for k, rs in runs_by_key(sw, oid).items()}


async def test_a_second_process_recovering_leaves_steps_running_elsewhere_alone(
        procs: Processes) -> None:
    a = procs.start()
    release = procs.gate(a)
    oid = await started(a)
    await procs.in_review(a, 2)  # s1 and s2 are running in A

    b = procs.start()  # a rolling deploy's new process
    assert await b.recover() == [oid]
    await asyncio.sleep(0.3)
    release.set()
    await approve_all(a, oid)
    await b.join()
    view = await approve_all(a, oid)

    assert view.state == "finished"
    assert all(st.state == "finished" and not st.error for st in view.steps)
    assert set(accepted_runs(a, oid).values()) == {1}
    with a.db.read() as s:  # B never ran s1 or s2: one worker call each, by A
        by_step = dict(s.execute(select(Step.key, func.count(LLMCall.id))
                                 .join(LLMCall, LLMCall.step_id == Step.id)
                                 .where(LLMCall.tier == "worker", Step.key.in_(["s1", "s2"]))
                                 .group_by(Step.key)).all())
    assert by_step == {"s1": 1, "s2": 1}


async def test_a_step_whose_process_stopped_renewing_is_taken_over_and_runs_once(
        procs: Processes) -> None:
    a = procs.start(lease_s=3600.0)  # its heartbeat would not renew before the test is over
    release = procs.gate(a)
    oid = await started(a)
    await procs.in_review(a, 2)
    with a.db.tx() as s:  # A stalls past its lease (a long GC pause, a frozen VM)
        s.execute(update(Step).where(Step.key.in_(["s1", "s2"]))
                  .values(lease_expires_at=utcnow() - timedelta(hours=1)))

    b = procs.start()
    await b.recover()
    await b.join()  # B takes s1 and s2 over and finishes them; A is still stuck in review
    with b.db.read() as s:
        assert set(s.scalars(select(Step.state).where(Step.key.in_(["s1", "s2"])))) == \
            {"finished"}
    release.set()  # A wakes up: its writes are refused by row, nothing fails
    await a.join()
    view = await approve_all(b, oid)

    assert view.state == "finished" and all(not st.error for st in view.steps)
    assert set(accepted_runs(b, oid).values()) == {1}
    with b.db.read() as s:
        abandoned = s.scalars(select(StepRun.error).where(StepRun.state == "abandoned")).all()
    assert len(abandoned) == 2 and all("lease" in (e or "") for e in abandoned)


async def test_calls_of_a_step_cancelled_mid_review_are_booked(procs: Processes) -> None:
    a = procs.start()
    procs.gate(a)
    oid = await started(a)
    await procs.in_review(a, 2)  # s1 and s2 made their worker calls; their reviews hang
    assert (await a.cancel(oid, "alice")).ok
    await a.join()
    await a.calls.drain()
    with a.db.read() as s:
        tiers = s.scalars(select(LLMCall.tier).where(LLMCall.objective_id == oid)).all()
    assert tiers.count("worker") == 2
    view = a.view(oid)
    assert view is not None and view.tokens > 0


async def test_a_call_cut_off_by_a_cancel_is_booked_as_such(procs: Processes) -> None:
    a = procs.start(offline_latency_ms=1500.0)
    oid = await started(a)
    while len([st for st in (a.view(oid) or a.view(0)).steps if st.state == "running"]) < 2:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # both worker calls are on their way to the model
    assert (await a.cancel(oid, "alice")).ok
    await a.join()
    await a.calls.drain()
    with a.db.read() as s:
        rows = s.execute(select(LLMCall.tier, LLMCall.ok, LLMCall.error, LLMCall.run_id)
                         .where(LLMCall.objective_id == oid, LLMCall.tier == "worker")).all()
    assert len(rows) == 2 and all(not ok and err == "CancelledError" and run
                                  for _, ok, err, run in rows)


async def test_budget_holds_end_with_their_calls(procs: Processes) -> None:
    a = procs.start(team_monthly_budget_tokens=10_000_000)
    for i in range(3):
        oid = await started(a, f"{GOAL} {i}", f"e{i}", ThreadRef("slack", "T1", "C1", str(i)))
        await approve_all(a, oid)
    await a.calls.drain()
    with a.db.read() as s:  # nothing held once the calls are written: counted once
        assert s.scalar(select(func.count(BudgetHold.id))) == 0


async def test_a_reply_answers_no_question_of_a_cancelled_objective(procs: Processes) -> None:
    a = procs.start()
    first = (await a.start_objective("Launch in Japan, ask us about the budget", THREAD,
                                     "alice", "e1")).objective_id
    view = await approve_all(a, first)
    assert [st.state for st in view.steps if st.key == "s2"] == ["waiting_human"]
    assert (await a.cancel(first, "alice")).ok
    assert a.open_questions(first) == []

    second = (await a.start_objective("Write a press release, ask us about the timeline",
                                      THREAD, "alice", "e2")).objective_id
    await approve_all(a, second)
    assert len(a.open_questions(second)) == 1
    assert await a.reply(THREAD, "alice", "By March")
    view = await approve_all(a, second)
    assert a.open_questions(second) == [] and view.state == "finished"
    assert "By March" in next(st.output or "" for st in view.steps if st.key == "s2")


class Remembered:
    """Team memory that only records what it was asked to remember."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def remember(self, team: str, text: str, *, kind: str, **_: Any) -> int:
        self.kinds.append(kind)
        return len(self.kinds)

    async def recall(self, team: str, query: str, k: int = 5) -> list[Any]:
        return []


def _race(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          act: Callable[[Swarm, bool], Any], memory: Remembered) -> dict[bool, Any]:
    """Two processes act at the same moment: both read before either writes."""
    barrier = threading.Barrier(2)
    real = Policy.may_decide

    def slow(self: Policy, s: Any, obj: Any, who: Any) -> bool:
        try:
            barrier.wait(timeout=1)
        except threading.BrokenBarrierError:  # the other one waits for our write lock
            pass
        return real(self, s, obj, who)

    monkeypatch.setattr(Policy, "may_decide", slow)
    results: dict[bool, Any] = {}

    def replica(flag: bool) -> None:
        db = Database.connect(url)
        sw = Swarm(make_settings(tmp_path, url), db, memory=memory)

        async def go() -> None:
            results[flag] = await act(sw, flag)
            await sw.join()
            await sw.shutdown()
        asyncio.run(go())
        db.close()

    threads = [threading.Thread(target=replica, args=(f,)) for f in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(Policy, "may_decide", real)
    return results


async def test_approve_and_reject_from_two_processes_record_one_decision(
        procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    a = procs.start()
    oid = (await a.start_objective(GOAL, THREAD, "alice", "e1")).objective_id
    await a.join()
    [plan] = a.pending_approvals(oid)

    memory = Remembered()
    results = await asyncio.to_thread(
        _race, procs.url, procs.tmp_path, monkeypatch,
        lambda sw, approve: sw.decide(plan.id, "alice", approve), memory)

    assert sorted(r.ok for r in results.values()) == [False, True]
    loser = next(r for r in results.values() if not r.ok)
    assert loser.message.startswith("Already ")
    with a.db.read() as s:
        decided = s.scalars(select(OutboxEvent.payload).where(
            OutboxEvent.kind == "ApprovalDecided")).all()
    assert len(decided) == 1
    view = a.view(oid)
    assert view is not None and view.state == ("running" if decided[0]["approved"]
                                               else "cancelled")
    # the losing transaction rolled back, and with it its side effects: one decision remembered
    assert memory.kinds.count("decision") == 1


@pytest.fixture
def two_dbs(db_url: str) -> Iterator[tuple[Database, Database]]:
    one, two = migrated(db_url), Database.connect(db_url)
    yield one, two
    one.close()
    two.close()


def test_two_writers_never_fork_the_audit_chain(two_dbs: tuple[Database, Database],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = two_dbs
    with one.tx() as s:
        audit(s, "seed", "seed")
    barrier = threading.Barrier(2)
    real = audit_module.redact_value

    def slow(value: Any) -> Any:  # both writers have read the head before either writes
        try:
            barrier.wait(timeout=1)
        except threading.BrokenBarrierError:  # SQLite: the other waits at BEGIN IMMEDIATE
            pass
        return real(value)

    monkeypatch.setattr(audit_module, "redact_value", slow)

    def write(db: Database, who: str) -> None:
        with db.tx() as s:
            audit(s, who, "question.answered")

    threads = [threading.Thread(target=write, args=(db, who))
               for db, who in ((one, "p1"), (two, "p2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with one.read() as s:
        report = verify_chain(s)
    assert report.ok and report.entries == 3


async def test_only_the_requester_or_an_admin_may_steer_an_objective(
        procs: Processes) -> None:
    a = procs.start()
    oid = await started(a)
    for act in (a.pause, a.cancel):
        refused = await act(oid, "mallory")
        assert not refused.ok and "requester or an admin" in refused.message
    view = a.view(oid)
    assert view is not None and view.state == "running"
    assert (await a.pause(oid, "alice")).ok
    assert not (await a.resume(oid, "mallory")).ok
    assert (await a.cancel(oid, "alice")).ok
