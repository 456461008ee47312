"""A real APScheduler clock on the test database, and waits that end as soon as they can."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from schedules.clock import Clock
from schedules.grounding import Grounder
from swarm.events import Event, event_from_payload
from swarm.services.objectives import Swarm
from swarm.store.models import OutboxEvent


def clock_for(swarm: Swarm, embedder: Any = None) -> Clock:
    grounder = Grounder(swarm, embedder)
    swarm.engine.checkpoint = grounder.checkpoint
    return Clock(swarm, grounder)


async def until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll `predicate` every 20 ms until it returns something true; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)
    return found


def events(swarm: Swarm, kind: str) -> list[tuple[OutboxEvent, Event]]:
    with swarm.db.read() as s:
        rows = list(s.scalars(select(OutboxEvent).where(OutboxEvent.kind == kind)
                              .order_by(OutboxEvent.id)))
    return [(r, event_from_payload(r.kind, r.payload)) for r in rows]
