"""The one way model calls are booked: each call's rows are written as the call returns."""
from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Connection, insert

from swarm.llm.budget import Hold, release_in
from swarm.store.db import Database
from swarm.store.models import LLMCall, table, utcnow
from swarm.store.turns import Turn

_INSERT = insert(table(LLMCall))
_COLUMNS = tuple(c.key for c in table(LLMCall).c if c.key != "id")
Booking = tuple[list[LLMCall], Hold | None]
Taken = tuple[Booking, "asyncio.Future[None]"]


def _values(call: LLMCall) -> dict[str, Any]:
    values = {k: getattr(call, k) for k in _COLUMNS}
    values["created_at"] = values["created_at"] or utcnow()
    return values


class CallBook:
    """Writes the rows of the calls that returned in one turn of the loop in one transaction,
    which deletes their budget holds too: the hold goes as the spend arrives, so a budget
    check (in any process) never misses it and never counts it twice. A cancelled step's
    calls are booked all the same (`submit` needs no await)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._turn: Turn[Booking, None] = Turn(self._write)

    def submit(self, rows: list[LLMCall], hold: Hold | None) -> None:
        self._turn.submit((rows, hold))

    def take(self) -> list[Taken]:
        """The calls that returned and are not written yet, for a transaction about to commit
        anyway (a step's finish writes its critic call with it: one commit, not two). Write
        them with insert(), then settle() after the commit, or give_back() after a rollback."""
        return self._turn.take()

    @staticmethod
    def insert(c: Connection, taken: list[Taken]) -> None:
        if values := [_values(row) for (rows, _), _future in taken for row in rows]:
            c.execute(_INSERT, values)
        release_in(c, (hold for (_, hold), _future in taken))

    def settle(self, taken: list[Taken]) -> None:
        for _, future in taken:
            if not future.done():
                future.set_result(None)

    def give_back(self, taken: list[Taken]) -> None:
        self._turn.give_back(taken)

    async def _write(self, bookings: list[Booking]) -> list[None | Exception]:
        values = [_values(row) for rows, _ in bookings for row in rows]
        holds = [hold for _, hold in bookings if hold is not None]

        def write() -> None:
            with self.db.core(wake=False) as c:  # bookkeeping: nothing new to deliver or run
                if values:
                    c.execute(_INSERT, values)
                release_in(c, holds)
        if values or holds:  # a write that fails for good leaves the holds to lapse
            await self.db.retrying(write, "llm_calls.insert")
        return [None] * len(bookings)

    async def drain(self) -> None:
        await self._turn.drain()
