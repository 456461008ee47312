"""The dispatcher's deliveries as a thread sees them: a retry shows nothing twice."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from bot.console.adapter import ConsoleAdapter
from bot.dispatcher import Dispatcher
from swarm.events import StepFinished
from swarm.models import ThreadRef
from swarm.outbox import emit
from swarm.service import Swarm


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
