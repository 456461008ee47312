"""The outbox store on both databases: threads never starve each other, two processes' dispatchers
share the work without delivering a row twice or out of order, old delivered rows go."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from bot.dispatcher import Dispatcher
from swarm.events import Event, Notice
from swarm.store.db import Database
from swarm.store.models import OutboxEvent, ThreadRef, utcnow
from swarm.store.outbox import claim, due_threads, emit, mark_delivered
from tests.conftest import migrated

ARCHIVED = ThreadRef("slack", "T1", "C0ARCHIVED", "1.1")
LIVE = ThreadRef("slack", "T1", "C0LIVE", "2.2")


class Recorder:
    """A chat adapter that shows each Notice by appending (thread, text) to a shared list, and
    fails every delivery to a channel named in `failing`."""

    platform, coalesce_progress = "slack", False

    def __init__(self, shown: list[tuple[str, str]], failing: frozenset[str] = frozenset()) -> None:
        self.shown, self.failing = shown, failing

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        await asyncio.sleep(0.001)  # a network call: the other dispatcher runs meanwhile
        if thread.channel_id in self.failing:
            raise ConnectionError("slack is unreachable from here")
        assert isinstance(event, Notice)
        self.shown.append((thread.key, event.text))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = migrated(db_url)
    yield database
    database.close()


def notices(db: Database, thread: ThreadRef, texts: list[str]) -> None:
    with db.tx() as s:
        emit(s, thread, *[Notice(1, t) for t in texts])


async def test_a_thread_that_cannot_be_delivered_holds_back_no_other_thread(
        db: Database) -> None:
    notices(db, ARCHIVED, [f"archived {i}" for i in range(600)])  # more than one batch
    notices(db, LIVE, ["hello live thread"])
    shown: list[tuple[str, str]] = []
    dispatcher = Dispatcher(db, [Recorder(shown, frozenset({"C0ARCHIVED"}))])
    await dispatcher.drain()
    assert shown == [(LIVE.key, "hello live thread")]
    notices(db, LIVE, ["and a second one"])  # the failed head waits for its retry meanwhile
    await dispatcher.drain()
    assert shown[-1] == (LIVE.key, "and a second one")
    with db.read() as s:
        head = s.scalars(select(OutboxEvent).where(OutboxEvent.thread_key == ARCHIVED.key)
                         .order_by(OutboxEvent.id)).first()
    assert head is not None and head.attempts == 1 and head.next_attempt_at is not None
    assert "ConnectionError" in (head.last_error or "")


async def test_two_processes_dispatchers_deliver_every_row_once_and_in_order_per_thread(
        db_url: str) -> None:
    first, second = migrated(db_url), Database.connect(db_url)
    threads = [ThreadRef("slack", "T1", f"C{n}", "1.1") for n in range(6)]
    try:
        for thread in threads:
            notices(first, thread, [f"{thread.channel_id}-{i:02d}" for i in range(10)])
        shown: list[tuple[str, str]] = []
        one, two = Dispatcher(first, [Recorder(shown)]), Dispatcher(second, [Recorder(shown)])
        for round_ in range(40):
            if round_ == 3:  # more arrive while both deliver
                for thread in threads:
                    notices(second, thread, [f"{thread.channel_id}-{i:02d}" for i in range(10,
                                                                                           15)])
            await asyncio.gather(one.drain(), two.drain())
            if len(shown) >= 6 * 15:
                break
        expected = sorted((t.key, f"{t.channel_id}-{i:02d}") for t in threads for i in range(15))
        assert sorted(shown) == expected, "every row delivered, none twice"
        for thread in threads:
            texts = [text for key, text in shown if key == thread.key]
            assert texts == sorted(texts), "a thread's rows in order"
    finally:
        first.close()
        second.close()


async def test_a_delivery_that_outlasts_its_lease_keeps_its_thread(db_url: str) -> None:
    first, second = migrated(db_url), Database.connect(db_url)
    try:
        notices(first, LIVE, ["slow to post"])
        shown: list[tuple[str, str]] = []
        slack_answers = asyncio.Event()

        class SlowSlack(Recorder):
            async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
                await slack_answers.wait()
                await super().deliver(event, thread, key)

        slow = Dispatcher(first, [SlowSlack(shown)], lease_s=0.3)
        delivering = asyncio.get_running_loop().create_task(slow.drain())
        await asyncio.sleep(1.0)  # three leases long: the lease is renewed meanwhile
        assert await Dispatcher(second, [Recorder(shown)]).drain() == 0
        slack_answers.set()
        assert await delivering == 1
        assert shown == [(LIVE.key, "slow to post")], "posted once"
    finally:
        first.close()
        second.close()


def _insert_with_id(db: Database, row_id: int, thread: ThreadRef, text: str) -> None:
    """A row whose id was handed out before the other rows' but committed after them."""
    with db.tx() as s:
        s.execute(insert(OutboxEvent).values(id=row_id, objective_id=1, platform=thread.platform,
                                             thread_key=thread.key, kind="Notice",
                                             progress=False, payload={"objective_id": 1,
                                                                      "text": text}))


def test_a_row_that_commits_late_waits_for_the_dispatcher_holding_its_thread(
        db_url: str) -> None:
    first, second = migrated(db_url), Database.connect(db_url)
    try:
        for row_id in (10, 11):
            _insert_with_id(first, row_id, LIVE, f"row {row_id}")
        with first.sessions.begin() as s:
            held = [r.id for r in claim(s, LIVE.key, "one", lease_s=60)]
        assert held == [10, 11]
        _insert_with_id(second, 5, LIVE, "row 5")  # its id is older than the claimed ones
        with second.read() as s:
            assert due_threads(s, ["slack"], "two") == [], "its thread is held by one"
        with second.sessions.begin() as s:
            assert claim(s, LIVE.key, "two", lease_s=60) == []
        with first.sessions.begin() as s:
            mark_delivered(s, held)
        with second.sessions.begin() as s:
            assert [r.id for r in claim(s, LIVE.key, "two", lease_s=60)] == [5]
    finally:
        first.close()
        second.close()


def test_an_expired_lease_is_taken_over(db: Database) -> None:
    notices(db, LIVE, ["a", "b"])
    with db.sessions.begin() as s:
        assert len(claim(s, LIVE.key, "crashed", lease_s=60)) == 2
    with db.sessions.begin() as s:
        assert claim(s, LIVE.key, "alive", lease_s=60) == []
        s.execute(update(OutboxEvent).values(claimed_until=utcnow() - timedelta(seconds=1)))
    with db.sessions.begin() as s:
        assert [r.claimed_by for r in claim(s, LIVE.key, "alive", lease_s=60)] == ["alive"] * 2


def test_on_postgresql_a_claim_in_flight_keeps_a_late_row_from_a_second_claimer(
        db_url: str) -> None:
    """PostgreSQL hands out ids before commit, so rows commit out of id order: while one
    dispatcher's claim is still uncommitted, a second must not deliver a late, older row."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers: a claim in flight blocks every other write")
    first, second = migrated(db_url), Database.connect(db_url)
    try:
        for row_id in (10, 11):
            _insert_with_id(first, row_id, LIVE, f"row {row_id}")
        with first.sessions.begin() as s:
            assert [r.id for r in claim(s, LIVE.key, "one", lease_s=60)] == [10, 11]
            _insert_with_id(second, 5, LIVE, "row 5")  # committed while one's claim is open
            with second.sessions.begin() as other:
                assert claim(other, LIVE.key, "two", lease_s=60) == []
        with second.sessions.begin() as other:
            assert claim(other, LIVE.key, "two", lease_s=60) == [], "one holds the thread"
    finally:
        first.close()
        second.close()


async def test_old_delivered_rows_are_pruned_and_dead_rows_kept(db: Database) -> None:
    notices(db, LIVE, ["delivered long ago", "delivered just now", "dead long ago", "open"])
    long_ago = utcnow() - timedelta(hours=25)
    with db.tx() as s:
        ids = list(s.scalars(select(OutboxEvent.id).order_by(OutboxEvent.id)))
        s.execute(update(OutboxEvent).where(OutboxEvent.id == ids[0])
                  .values(delivered_at=long_ago))
        s.execute(update(OutboxEvent).where(OutboxEvent.id == ids[1])
                  .values(delivered_at=utcnow()))
        s.execute(update(OutboxEvent).where(OutboxEvent.id == ids[2]).values(dead_at=long_ago))
    dispatcher = Dispatcher(db, [Recorder([])], keep_delivered_s=24 * 3600)
    assert dispatcher.prune() == 1
    with db.read() as s:
        left = list(s.scalars(select(OutboxEvent.id).order_by(OutboxEvent.id)))
    assert left == ids[1:]
