"""Issue 16: a web process and two Celery workers on PostgreSQL and RabbitMQ; one worker is
SIGKILLed mid-step, and the 40 objectives end as if nothing happened."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from swarm.store.models import LLMCall, Objective, OutboxEvent, Step, StepRun
from swarm.store.spend import objective_spend
from tests.celery_steps import delete_queue, require_broker
from tests.conftest import _pg_schema_url, migrated
from tests.fakes.slack_api import Call, FakeSlackAPI
from tests.fakes.slack_bot import BOT_TOKEN, SECRET
from tests.fakes.slack_events import SlackEvents
from tests.processes import cli

GOAL = "Launch a localized campaign for our SaaS in Japan"
OBJECTIVES = 40
LATENCY_MS = 50  # per model call: a step (two to four calls) runs for a few tenths of a second
BROKER = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
DEADLINE_S = 120.0
SETTLE_S = 3.0  # three progress-edit intervals: the trailing edits owed when the outbox empties


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _approvals(call: Call) -> list[str]:
    return [el["action_id"] for block in call.params.get("blocks", [])
            if block["type"] == "actions" for el in block["elements"]
            if el["action_id"].startswith("approve:")]


async def _until(check: Callable[[], Any], what: str, procs: list[subprocess.Popen[bytes]],
                 timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        for proc in procs:
            assert proc.poll() is None, f"{proc.args!r} exited ({proc.returncode}) first"
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.mark.timeout(300)  # three processes start (litellm's import) on a shared 2-core machine
async def test_forty_objectives_survive_a_worker_sigkilled_mid_step(tmp_path: Path) -> None:
    require_broker(BROKER)
    urls = _pg_schema_url()
    db_url = next(urls)
    queue = f"threadswarm-accept-{uuid.uuid4().hex[:8]}"
    api = await FakeSlackAPI().start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(DATABASE_URL=db_url, THREADSWARM_DATA_DIR=str(tmp_path),
               THREADSWARM_MEMORY_ENABLED="false", THREADSWARM_OFFLINE_LATENCY_MS=str(LATENCY_MS),
               THREADSWARM_EXECUTOR="celery", CELERY_BROKER_URL=BROKER,
               THREADSWARM_CELERY_QUEUE=queue, PORT=str(port), SLACK_BOT_TOKEN=BOT_TOKEN,
               SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=api.base_url)
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as out:
            procs.append(subprocess.Popen(cli("-v", *args), env=env, cwd=tmp_path,
                                          stdout=out, stderr=subprocess.STDOUT))
        return procs[-1]

    engine = create_engine(db_url)
    events = SlackEvents(f"http://127.0.0.1:{port}/slack/events", SECRET)
    try:
        migrated(db_url).close()  # `threadswarm migrate`, as a deploy runs it before the processes
        web = start("web", "serve", "--role", "web", "--host", "127.0.0.1")
        doomed = start("worker-1", "worker", "--concurrency", "2")
        start("worker-2", "worker", "--concurrency", "2")
        await _until(lambda: _healthy(port), "the web process answers /healthz", procs)

        threads = []
        for n in range(OBJECTIVES):  # through the web process's real Slack ingress, signed
            event = events.mention_event(f"{GOAL} (market {n})")
            delivery, _ = await events.event(event)
            assert delivery.status == 200
            threads.append(event["ts"])

        clicked: set[str] = set()

        async def approve_what_asks() -> None:
            """Click Approve on every approval message posted so far, as the requester."""
            for call in api.to("chat.postMessage"):
                for action in _approvals(call):
                    if action not in clicked:
                        clicked.add(action)
                        delivery = await events.click(
                            action, action.split(":")[1], user="U0ALICE", channel="C0GENERAL",
                            message_ts=call.answer["ts"], thread_ts=call.params.get("thread_ts"))
                        assert delivery.status == 200

        def mid_step() -> bool:  # the doomed worker holds a step between its model calls
            with Session(engine) as s:
                owners = s.scalars(select(Step.lease_owner).where(Step.state == "running"))
                return any(o and o.split(":")[1] == str(doomed.pid) for o in owners)

        async def approving_until(check: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + DEADLINE_S
            while not check():
                assert time.monotonic() < deadline, f"never: {what}"
                for proc in procs:
                    assert proc.poll() is None, f"{proc.args!r} exited ({proc.returncode})"
                await approve_what_asks()
                await asyncio.sleep(0.05)

        await approving_until(mid_step, "the first worker runs a step")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)  # reaped: its pid is gone, so its lease lapses at once
        procs.remove(doomed)
        killed_at = time.monotonic()
        await approving_until(lambda: _ended(engine) == OBJECTIVES, "every objective ended")
        ended_after_kill_s = time.monotonic() - killed_at
        await _until(lambda: _all_delivered(engine), "the outbox is delivered", [web])
        # A progress edit folded into a trailing one is still owed for up to an interval after
        # the last row is delivered; a web process stopped then leaves it to the next one by
        # reopening that row (bot/progress.py), which this test would read as undelivered.
        await asyncio.sleep(SETTLE_S)
        await _until(lambda: _all_delivered(engine), "the outbox is delivered", [web])
    finally:
        await events.close()
        procs.append(doomed)  # stopped below if the test failed before the kill
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await api.close()
        with contextlib.suppress(Exception):
            delete_queue(BROKER, queue)

    try:
        assert doomed.returncode == -signal.SIGKILL
        assert web.returncode == 0, (tmp_path / "web.log").read_text()[-3000:]
        _assert_every_objective_finished(engine)
        _assert_no_finished_step_ran_again(engine)
        _assert_each_event_delivered_once(engine, api, threads)
        _assert_spend_is_the_calls(engine)
        assert ended_after_kill_s < DEADLINE_S
    finally:
        engine.dispose()
        with contextlib.suppress(StopIteration):
            next(urls)  # drops the schema


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(json.loads(r.read()).get("ok"))
    except OSError:
        return False


def _ended(engine: Any) -> int:
    with Session(engine) as s:
        return len(s.scalars(select(Objective.id).where(
            Objective.state.in_(["finished", "failed", "cancelled"]))).all())


def _all_delivered(engine: Any) -> bool:
    with Session(engine) as s:
        return not s.scalars(select(OutboxEvent.id).where(OutboxEvent.delivered_at.is_(None),
                                                          OutboxEvent.dead_at.is_(None))).all()


def _assert_every_objective_finished(engine: Any) -> None:
    with Session(engine) as s:
        states = Counter(s.scalars(select(Objective.state)))
        assert states == {"finished": OBJECTIVES}
        assert not s.scalars(select(StepRun.id).where(StepRun.state == "running")).all()
        assert not s.scalars(select(Step.id).where(Step.claim_token.is_not(None))).all()


def _assert_no_finished_step_ran_again(engine: Any) -> None:
    """Each step has one accepted run, none started after it finished; the step the kill hit
    was taken over (its run abandoned) and finished on the other worker."""
    with Session(engine) as s:
        steps = {st.id: st for st in s.scalars(select(Step))}
        runs = list(s.scalars(select(StepRun)))
        accepted = Counter(r.step_id for r in runs if r.state == "accepted")
        assert all(st.state == "finished" for st in steps.values())
        assert set(accepted.values()) == {1} and set(accepted) == set(steps)
        assert not [r.id for r in runs if r.started_at > steps[r.step_id].finished_at]
        abandoned = [r for r in runs if r.state == "abandoned"]
        assert abandoned, "the kill hit no step run"
        assert all("taken over" in (r.error or "") for r in abandoned)
        told = Counter(p["step_id"] for p in s.scalars(select(OutboxEvent.payload).where(
            OutboxEvent.kind == "StepFinished")))
        assert told == Counter(set(steps)), "a step was announced finished twice (or never)"


def _assert_each_event_delivered_once(engine: Any, api: FakeSlackAPI,
                                      threads: list[str]) -> None:
    """Every outbox row delivered, none given up; in each thread no message was posted twice,
    and each objective's result was posted exactly once."""
    with Session(engine) as s:
        rows = list(s.scalars(select(OutboxEvent)))
        objective_of = dict(s.execute(select(Objective.thread_id, Objective.id)).all())
    undelivered = [(r.id, r.kind, r.delivered_at, r.dead_at, r.attempts, r.last_error)
                   for r in rows if r.delivered_at is None or r.dead_at is not None]
    assert rows and not undelivered, undelivered
    posts = api.to("chat.postMessage")
    assert set(objective_of) == set(threads)
    for ts in threads:
        texts = [c.text() for c in posts if c.params.get("thread_ts") == ts]
        assert texts and len(texts) == len(set(texts)), f"a message posted twice in {ts}"
        result = f"Objective #{objective_of[ts]} finished*"
        assert sum(result in t for t in texts) == 1, f"the results of {ts} not posted once"


def _assert_spend_is_the_calls(engine: Any) -> None:
    """Each objective's spend, as its thread was told, is the sum of the calls it recorded."""
    with Session(engine) as s:
        for oid in s.scalars(select(Objective.id)):
            calls = s.execute(select(LLMCall.prompt_tokens, LLMCall.completion_tokens,
                                     LLMCall.cost).where(LLMCall.objective_id == oid)).all()
            spend = objective_spend(s, oid)
            assert (spend.calls, spend.tokens) == (len(calls), sum(p + c for p, c, _ in calls))
            assert abs(spend.cost - sum(cost or 0 for _, _, cost in calls)) < 1e-9
            told = s.scalar(select(OutboxEvent.payload).where(
                OutboxEvent.objective_id == oid, OutboxEvent.kind == "ObjectiveFinished"))
            assert told is not None and told["tokens"] == spend.tokens
            assert abs(told["cost"] - spend.cost) < 1e-9
