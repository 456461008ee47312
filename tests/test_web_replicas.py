"""Issue 16: a second web replica started mid-run delivers nothing twice, nothing out of order.

Two real `threadswarm serve` processes on one PostgreSQL database, both against the fake Slack
in this process: what Slack received is the evidence. Their dispatchers poll once an hour, so
what crosses between them is woken by NOTIFY (swarm/store/notify.py).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from swarm.store.models import MessageRef, Objective, OutboxEvent
from tests.conftest import _pg_schema_url, migrated
from tests.fakes.slack_api import Call, FakeSlackAPI
from tests.fakes.slack_bot import BOT_TOKEN, SECRET
from tests.fakes.slack_events import SlackEvents
from tests.processes import cli
from tests.test_slack import ALICE, action_ids

START_S = 60.0  # a process start takes 5-7 s (importing litellm); more under load
RUN_S = 120.0
PROGRESS_INTERVAL_S = 1.0  # the Slack edge's default edit interval


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A migrated database, as `threadswarm migrate` leaves it before the replicas start."""
    for url in _pg_schema_url():
        migrated(url).close()
        yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One `threadswarm serve` web process."""

    def __init__(self, tmp_path: Path, url: str, api: FakeSlackAPI, name: str,
                 **extra: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
        env.update(DATABASE_URL=url, THREADSWARM_DATA_DIR=str(tmp_path / name),
                   THREADSWARM_MEMORY_ENABLED="false", THREADSWARM_OFFLINE_LATENCY_MS="300",
                   THREADSWARM_OUTBOX_POLL_S="3600", PORT=str(self.port),
                   SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                   SLACK_API_URL=api.base_url, **extra)
        self.log = (tmp_path / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(cli("serve", "--host", "127.0.0.1"), env=env,
                                     cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=self.log)

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    async def healthy(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(int(START_S / 0.2)):
                assert self.proc.poll() is None, f"serve exited ({self.proc.returncode})"
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("serve never answered /healthz")

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, 60)
        self.log.close()
        return code


@pytest.fixture
async def api() -> AsyncIterator[FakeSlackAPI]:
    fake = await FakeSlackAPI().start()
    yield fake
    await fake.close()


def in_thread(api: FakeSlackAPI, thread_ts: str, needle: str) -> list[Call]:
    return [c for c in api.posted(needle) if c.params.get("thread_ts") == thread_ts
            and action_ids(c)]


class Slack:
    """The humans: mention the bot and click its buttons, through either replica."""

    def __init__(self, api: FakeSlackAPI) -> None:
        self.api = api
        self.events = SlackEvents("", SECRET)  # one sender: event ids and ts never repeat

    async def mention(self, via: Replica, goal: str, channel: str) -> str:
        self.events.url = via.events_url
        event = self.events.mention_event(goal, channel=channel)
        delivery, _ = await self.events.event(event)
        assert delivery.status == 200
        return str(event["ts"])

    async def approve(self, via: Replica, thread_ts: str, needle: str) -> None:
        shown = await self.api.wait_for(lambda: in_thread(self.api, thread_ts, needle), RUN_S,
                                        f"{needle!r} in {thread_ts}")
        message = shown[-1]
        action = next(a for a in action_ids(message) if a.startswith("approve:"))
        self.events.url = via.events_url
        delivery = await self.events.click(action, action.split(":")[1], user=ALICE,
                                           channel=message.params["channel"],
                                           message_ts=message.answer["ts"],
                                           thread_ts=thread_ts)
        assert delivery.status == 200


# -- what Slack received, read against the outbox ------------------------------------------
def row_of_ref(ref: MessageRef, rows: list[OutboxEvent]) -> int | None:
    """The outbox row whose delivery posted the message `ref` records (None: the progress
    message, which many rows edit in place)."""
    mine = [r for r in rows if r.objective_id == ref.objective_id]
    kind, _, rest = ref.key.partition(":")
    if kind == "outbox":
        return int(rest.split(":")[0])
    if kind == "accepted":
        return min(r.id for r in mine if r.kind == "ObjectiveAccepted")
    if kind == "approval":
        return min(r.id for r in mine if r.payload.get("approval_id") == int(rest)
                   and r.kind in ("PlanProposed", "ApprovalRequested", "DriftDetected"))
    if kind == "question":
        return min(r.id for r in mine if r.payload.get("question_id") == int(rest))
    if kind == "results":
        return min(r.id for r in mine if r.kind == "ObjectiveFinished")
    assert kind == "progress", f"a message ref this test does not know: {ref.key}"
    return None


@pytest.mark.timeout(4 * START_S + 2 * RUN_S)
async def test_a_second_replica_started_mid_run_delivers_nothing_twice_and_in_order(
        tmp_path: Path, pg_url: str, api: FakeSlackAPI) -> None:
    slack = Slack(api)
    first = Replica(tmp_path, pg_url, api, "first")
    second: Replica | None = None
    try:
        await first.healthy()
        threads = [await slack.mention(first, f"launch our SaaS in market {i}", "C0GENERAL")
                   for i in range(3)]
        for ts in threads:
            await slack.approve(first, ts, "*Plan v1")
        # mid-run: the three objectives are planned and running when the second one starts
        # (web only: one clock per database)
        second = Replica(tmp_path, pg_url, api, "second", THREADSWARM_SCHEDULER_ENABLED="false")
        await second.healthy()
        threads.append(await slack.mention(second, "launch our SaaS in Korea", "C0OTHER"))
        await slack.approve(second, threads[-1], "*Plan v1")
        for i, ts in enumerate(threads):  # the risky step's approval, through either replica
            await slack.approve((first, second)[i % 2], ts, "Approval needed")
        engine = create_engine(pg_url)
        try:
            def settled() -> bool:
                with Session(engine) as s:
                    states = set(s.scalars(select(Objective.state)))
                    open_rows = s.scalars(select(OutboxEvent.id).where(
                        OutboxEvent.delivered_at.is_(None))).first()
                return states == {"finished"} and open_rows is None
            await api.wait_for(settled, RUN_S, "every objective finished and delivered")
            await asyncio.sleep(2 * PROGRESS_INTERVAL_S)  # the trailing progress edits
            with Session(engine) as s:
                rows = list(s.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
                refs = list(s.scalars(select(MessageRef)))
                objectives = {o.thread_id: o.id for o in s.scalars(select(Objective))}
        finally:
            engine.dispose()
        assert (await first.stop(), await second.stop()) == (0, 0)
    finally:
        await slack.events.close()
        for replica in (first, second):
            if replica is not None and replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait(10)

    assert len(objectives) == 4 and all(r.dead_at is None for r in rows)
    # both replicas delivered: a delivered row keeps the claim of the dispatcher that sent it
    senders = Counter(str(r.claimed_by).split("-")[0] for r in rows)
    assert len(senders) == 2, f"one replica delivered everything: {senders}"

    # nothing twice: every message Slack shows in a thread has exactly one ref, and each
    # objective has one progress message
    posts = [c for c in api.to("chat.postMessage") if c.params.get("thread_ts") in objectives]
    by_ts = {r.message_id: r for r in refs if not r.key.endswith((":picture", ":file"))}
    assert sorted(c.answer["ts"] for c in posts) == sorted(by_ts), \
        "a message was posted that no delivery recorded (posted twice)"
    progress = Counter(r.objective_id for r in refs if r.key == "progress")
    assert progress == Counter(objectives.values())
    uploads = api.to("files.completeUploadExternal")
    assert len(uploads) == len([r for r in refs if r.key.endswith(":picture")])

    # in order per thread: the messages of a thread arrived in the order of their rows
    arrived: dict[str, list[int]] = defaultdict(list)
    for call in posts:
        row = row_of_ref(by_ts[call.answer["ts"]], rows)
        if row is not None:
            arrived[call.params["thread_ts"]].append(row)
    assert set(arrived) == set(threads)
    for ts, order in arrived.items():
        assert order == sorted(order), f"thread {ts} got its messages out of order: {order}"
        assert len(order) >= 4, "accepted, plan, step approval and results at least"

    # and together the replicas kept each progress message to the edit rate
    for ref in (r for r in refs if r.key == "progress"):
        edits = [c.at for c in api.to("chat.update") if c.params["ts"] == ref.message_id]
        gaps = [b - a for a, b in zip(edits, edits[1:], strict=False)]
        assert min(gaps, default=PROGRESS_INTERVAL_S) >= 0.9 * PROGRESS_INTERVAL_S, \
            f"objective {ref.objective_id}'s progress was edited faster than the interval: {gaps}"
