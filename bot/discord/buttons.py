"""Approve / Reject buttons whose custom_id carries the approval's database id.

A `DynamicItem` is matched by its custom_id's template, not by a view held in memory, so a
button posted by another process (or before a restart) works here as soon as the client has
registered the class (`setup_hook`)."""
from __future__ import annotations

import re
from typing import Any, Protocol

import discord

APPROVE, REJECT = "approve", "reject"


class ClickHandler(Protocol):
    async def on_approval_click(self, interaction: discord.Interaction[Any], approval_id: int,
                                approve: bool) -> None: ...


def custom_id(approval_id: int, approve: bool) -> str:
    return f"{APPROVE if approve else REJECT}:{approval_id}"


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                     template=r"(?P<verb>approve|reject):(?P<id>\d{1,19})"):
    def __init__(self, approval_id: int, *, approve: bool) -> None:
        super().__init__(discord.ui.Button(
            label="Approve" if approve else "Reject",
            style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
            custom_id=custom_id(approval_id, approve)))
        self.approval_id, self.approve = approval_id, approve

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any],
                             item: discord.ui.Item[Any], match: re.Match[str], /
                             ) -> ApprovalButton:
        return cls(int(match["id"]), approve=match["verb"] == APPROVE)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: ClickHandler = interaction.client  # type: ignore[assignment]
        await handler.on_approval_click(interaction, self.approval_id, self.approve)
