"""Who may do what to an objective: the one place every service method asks."""
from __future__ import annotations

from swarm.config import Settings


def may_decide(settings: Settings, requester: str, user: str) -> bool:
    """Approve or reject its plan and steps, answer for its budget, and steer it (cancel,
    pause, resume): the requester and the configured approvers (`"*"`: anyone)."""
    return user == requester or user in settings.approvers or "*" in settings.approvers


def refusal(action: str) -> str:
    return f"Only the requester or a configured approver can {action} this."
