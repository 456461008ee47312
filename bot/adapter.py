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

    async def deliver(self, event: Event, thread: ThreadRef) -> None:
        """Show one event in its thread; raise to have the dispatcher retry it later."""
        ...


def thread_from_key(key: str) -> ThreadRef:
    platform, team_id, channel_id, thread_id = key.split(":", 3)
    return ThreadRef(platform, team_id, channel_id, thread_id)
