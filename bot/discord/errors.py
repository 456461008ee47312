"""Which Discord REST errors are permanent: the dispatcher dead-letters those at once."""
from __future__ import annotations

import discord

from bot.adapter import PermanentDeliveryError

# This message can never be posted as it is, but a short notice in the thread can say so:
# Invalid Form Body (e.g. too long), Cannot send an empty message, file too large.
MESSAGE_REFUSED = frozenset({50035, 50006, 40005})


def permanent(exc: Exception) -> PermanentDeliveryError | None:
    """The PermanentDeliveryError that `exc` amounts to, or None if a retry may succeed."""
    if isinstance(exc, discord.NotFound | discord.Forbidden):
        # The thread or the message edited in place is gone, or closed to the bot: every
        # later event of the thread meets the same refusal, and a notice for each would flood.
        return PermanentDeliveryError(f"{exc.status} {exc.code or ''}".strip(), notify=False)
    if isinstance(exc, discord.HTTPException) and exc.code in MESSAGE_REFUSED:
        return PermanentDeliveryError(f"{exc.status} {exc.code}", notify=True)
    return None
