"""The contract every chat adapter implements: neutral events in, platform messages out."""
from __future__ import annotations

from typing import Protocol

from swarm.events import Event
from swarm.store.models import ThreadRef


class PermanentDeliveryError(Exception):
    """The platform refused the event for good (an archived channel, a revoked token, a message
    too long): retrying cannot help, so the dispatcher dead-letters it at once. `notify`: a
    short notice in the thread should say what was lost (the thread still takes posts, and
    the refusal is not one that every later event of the thread meets too)."""

    def __init__(self, reason: str, *, notify: bool) -> None:
        super().__init__(reason)
        self.reason, self.notify = reason, notify


class ChatAdapter(Protocol):
    platform: str
    # True: a run of progress events may be delivered as its last one (the adapter re-renders
    # one progress message from the objective's current view, so nothing is lost).
    coalesce_progress: bool

    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        """Show one event in its thread. `key` is the same on every retry of this delivery
        (`delivery_key` of its outbox row): each message posted for it is recorded under
        `f"{key}:{part}"`, so a retry after a partial failure skips the parts already posted.
        Raise PermanentDeliveryError when retrying cannot help; any other exception has the
        dispatcher retry the event later, with backoff, a bounded number of times.

        An event for which `bot.picture.snapshot_for` gives a snapshot (a plan proposed, an
        objective ended, `PictureRequested`) also brings a picture of the plan: draw it with
        `bot.picture.render` (off the loop; None when it cannot be drawn, and then the text is
        enough) and post the PNG, with its alt text, after the event's text as the part
        `f"{key}:picture"`. A picture the platform refuses for good is logged and left out: it
        never dead-letters the event. `bot.routing.EventRouter` does all of this for a platform
        that gives it its renderer and a `Surface` (how it posts, edits and uploads)."""
        ...


def delivery_key(row_id: int) -> str:
    return f"outbox:{row_id}"


def thread_from_key(key: str) -> ThreadRef:
    platform, team_id, channel_id, thread_id = key.split(":", 3)
    return ThreadRef(platform, team_id, channel_id, thread_id)
