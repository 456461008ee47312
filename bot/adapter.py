"""The contract every chat adapter implements: neutral events in, platform messages out."""
from __future__ import annotations

from typing import Protocol

from swarm.events import Event
from swarm.models import ThreadRef


class ChatAdapter(Protocol):
    platform: str
    # True: a run of progress events may be delivered as its last one (the adapter re-renders
    # one progress message from the objective's current view, so nothing is lost).
    coalesce_progress: bool

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Show one event in its thread; raise to have the dispatcher retry it later. `key` is
        the same on every retry of this delivery (`delivery_key` of its outbox row): each
        message posted for it is recorded under `f"{key}:{part}"`, so a retry after a partial
        failure skips the parts already posted."""
        ...


def delivery_key(row_id: int) -> str:
    return f"outbox:{row_id}"


def thread_from_key(key: str) -> ThreadRef:
    platform, team_id, channel_id, thread_id = key.split(":", 3)
    return ThreadRef(platform, team_id, channel_id, thread_id)
