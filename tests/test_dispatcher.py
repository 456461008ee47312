"""The dispatcher as a thread sees it: nothing shown twice, dead letters told, always stops."""
from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
from rich.console import Console
from sqlalchemy import insert, select, text

from bot.adapter import PermanentDeliveryError
from bot.console.adapter import ConsoleAdapter
from bot.dispatcher import Dispatcher
from swarm.events import Event, Notice, StepFinished
from swarm.services.objectives import Swarm
from swarm.store.db import Database
from swarm.store.models import OutboxEvent, ThreadRef
from swarm.store.outbox import emit
from tests.conftest import _pg_schema_url, migrated
from tests.fakes.local_server import wait_until

THREAD = ThreadRef("slack", "T1", "C0GENERAL", "1.1")
Refusal = Callable[[Event], Exception | None]


class Thread:
    """A chat adapter: shows each Notice's text in `shown` unless `refuse` returns an error;
    each delivery first awaits `hold()`, if given (a slow or hung platform)."""

    platform, coalesce_progress = "slack", False

    def __init__(self, refuse: Refusal = lambda event: None,
                 hold: Callable[[], Awaitable[object]] | None = None) -> None:
        self.shown: list[str] = []
        self.refuse, self.hold = refuse, hold
        self.entered = asyncio.Event()

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        self.entered.set()
        if self.hold is not None:
            await self.hold()
        if (error := self.refuse(event)) is not None:
            raise error
        assert isinstance(event, Notice)
        self.shown.append(event.text)


def refusing(text: str, error: Exception) -> Refusal:
    return lambda event: error if isinstance(event, Notice) and event.text == text else None


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = migrated(db_url)
    yield database
    database.close()


def post(db: Database, *texts: str) -> None:
    with db.tx() as s:
        emit(s, THREAD, *[Notice(1, t) for t in texts])


def rows(db: Database) -> list[OutboxEvent]:
    with db.read() as s:
        return list(s.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


async def test_an_event_this_version_cannot_read_is_dead_lettered_and_its_thread_goes_on(
        db: Database) -> None:
    post(db, "before")
    with db.tx() as s:  # written by a newer version, then rolled back to this one
        s.execute(insert(OutboxEvent).values(objective_id=1, platform="slack",
                                             thread_key=THREAD.key, kind="EventFromTheFuture",
                                             progress=False, payload={"objective_id": 1}))
    post(db, "after")
    thread = Thread()
    await Dispatcher(db, [thread]).drain()
    assert thread.shown[0] == "before" and thread.shown[-1] == "after"
    assert len(thread.shown) == 3 and "EventFromTheFuture" in thread.shown[1], \
        "the thread is told an update could not be posted"
    dead = rows(db)[1]
    assert dead.dead_at is not None and dead.delivered_at is None and dead.attempts == 1


async def test_a_permanent_refusal_is_dead_lettered_at_once_and_a_closed_thread_gets_no_notice(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot")
    post(db, "secret plan for the archived channel", "second")
    thread = Thread(lambda event: PermanentDeliveryError("is_archived", notify=False))
    dispatcher = Dispatcher(db, [thread])
    assert await dispatcher.drain() == 2
    assert all(r.dead_at is not None and r.attempts == 1 and r.last_error == "is_archived"
               for r in rows(db))
    assert thread.shown == [] and not dispatcher.has_pending()
    logged = [r.getMessage() for r in caplog.records if "dispatcher.dead_letter" in
              r.getMessage()]
    assert len(logged) == 2 and "reason=is_archived" in logged[0] and "kind=Notice" in logged[0]
    assert not [r for r in caplog.records if "secret plan" in r.getMessage()], "no payload logged"


async def test_a_delivery_that_keeps_failing_is_given_up_after_the_last_attempt(
        db: Database) -> None:
    post(db, "flaky", "next")
    thread = Thread(refusing("flaky", ConnectionError("reset by peer")))
    dispatcher = Dispatcher(db, [thread], max_attempts=3, max_backoff_s=0.0)
    for attempt in (1, 2):
        await dispatcher.drain()
        assert thread.shown == [], "later rows wait while the first is retried"
        assert rows(db)[0].attempts == attempt and rows(db)[0].dead_at is None
    await dispatcher.drain()
    flaky = rows(db)[0]
    assert flaky.dead_at is not None and flaky.attempts == 3
    assert flaky.last_error == "ConnectionError after 3 attempts: reset by peer"
    assert len(thread.shown) == 2 and "ConnectionError after 3 attempts" in thread.shown[0]
    assert thread.shown[1] == "next"
    await dispatcher.drain()
    assert len(thread.shown) == 2, "a dead row is not tried again"


async def test_stop_returns_when_a_wake_arrives_just_as_it_stops(db: Database) -> None:
    # asyncio.wait_for (Python 3.11) returns the inner result when a cancel lands as the inner
    # wait completes: a loop stopped only by cancel() then polls on and never ends.
    for turns in range(4):
        thread = Thread()
        dispatcher = Dispatcher(db, [thread], poll_s=0.05)
        dispatcher.start()
        await asyncio.sleep(0.01)
        dispatcher.wake()
        for _ in range(turns):
            await asyncio.sleep(0)
        await asyncio.wait_for(dispatcher.stop(), 10)
        post(db, f"after stop {turns}")
        await asyncio.sleep(0.3)
        assert thread.shown == [], "a stopped dispatcher delivers nothing"
        await Dispatcher(db, [Thread()]).drain()  # the next test round starts clean


async def stop_while_delivering(db: Database, delivery: Callable[[], Awaitable[object]]) -> None:
    """Stop a dispatcher while it delivers a row, the delivery being `delivery()`."""
    hanging = Thread(hold=delivery)
    dispatcher = Dispatcher(db, [hanging], stop_timeout_s=0.2)
    post(db, "stuck")
    dispatcher.start()
    await asyncio.wait_for(hanging.entered.wait(), 10)
    await asyncio.wait_for(dispatcher.stop(), 10)


async def test_stop_cancels_a_hung_delivery_and_frees_its_thread_for_another_process(
        db: Database) -> None:
    await stop_while_delivering(db, asyncio.Event().wait)
    other = Thread()
    await Dispatcher(db, [other]).drain()
    assert other.shown == ["stuck"], "delivered at once, not after the lease runs out"


async def test_stop_returns_even_when_a_delivery_ignores_its_cancel(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    stuck = asyncio.Event()

    async def ignoring_a_cancel() -> None:
        try:
            await stuck.wait()
        except asyncio.CancelledError:  # as asyncio.wait_for can on Python 3.11
            await stuck.wait()

    await stop_while_delivering(db, ignoring_a_cancel)
    assert "shutdown.timed_out what=dispatcher.loop" in caplog.text
    stuck.set()  # let the left-behind delivery end before the test's loop closes
    await asyncio.sleep(0.05)


async def test_the_console_shows_an_event_once_when_its_first_delivery_fails(
        swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = ConsoleAdapter(swarm, Console(file=out, width=120))
    view, failures = swarm.view, [RuntimeError("database is locked")]

    def view_failing_once(objective_id: int):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return view(objective_id)

    monkeypatch.setattr(swarm, "view", view_failing_once)
    thread = ThreadRef("console", "team", "console", "t-1")
    with swarm.db.tx() as s:
        emit(s, thread, StepFinished(1, 7, "Draft the deliverable", "writer", "The draft."))
    dispatcher = Dispatcher(swarm.db, [console], max_backoff_s=0.0)
    await dispatcher.drain()
    await dispatcher.drain()
    assert out.getvalue().count("Draft the deliverable") == 1


# -- across processes: PostgreSQL's NOTIFY wakes the dispatcher ------------------------------------
WRITER = """
import sys
from swarm.events import Notice
from swarm.store.db import Database
from swarm.store.models import ThreadRef
from swarm.store.outbox import emit
from tests.conftest import _pg_schema_url
from tests.fakes.local_server import wait_until
db = Database.connect(sys.argv[1])
with db.tx() as s:
    emit(s, ThreadRef("slack", "T1", "C0GENERAL", "1.1"), Notice(1, sys.argv[2]))
db.close()
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    for url in _pg_schema_url():
        migrated(url).close()
        yield url


async def write_from_another_process(url: str, text: str) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, text)
    assert await proc.wait() == 0


async def test_a_row_another_process_writes_is_delivered_without_waiting_for_the_poll(
        pg_url: str) -> None:
    db = Database.connect(pg_url)
    thread = Thread()
    dispatcher = Dispatcher(db, [thread], poll_s=3600)  # the poll cannot be what delivers
    dispatcher.start()
    try:
        await asyncio.wait_for(dispatcher.listening.wait(), 30)
        await write_from_another_process(pg_url, "from a worker")
        await wait_until(lambda: thread.shown == ["from a worker"], 30, "the delivery")
        # the listening connection is cut (a server restart, a failover): it listens again
        with db.engine.connect() as conn:
            cut = conn.execute(text("select pg_terminate_backend(pid) from pg_stat_activity "
                                    "where application_name = :name"),
                               {"name": dispatcher.listen_name}).scalars().all()
        assert cut == [True]
        await wait_until(lambda: not dispatcher.listening.is_set(), 30, "the lost connection")
        await asyncio.wait_for(dispatcher.listening.wait(), 30)
        await write_from_another_process(pg_url, "after the reconnect")
        await wait_until(lambda: thread.shown[-1:] == ["after the reconnect"], 30, "the delivery")
        assert thread.shown == ["from a worker", "after the reconnect"]
    finally:
        await dispatcher.stop()
        db.close()
