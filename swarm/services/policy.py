"""Who may do what: the one place every service method asks. Adapters only report facts about
the actor (a Principal); the rules are here."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from swarm.config import Settings
from swarm.contract import Actor, Principal
from swarm.store import team
from swarm.store.models import Objective

ADMIN_HINT = ("Admins are the platform's own (Slack workspace admins and owners, Discord "
              "members with Manage Server) and those `/swarm admins list` shows.")


def as_principal(actor: Actor, team_id: str, platform: str) -> Principal:
    """A bare user id is that user in the objective's team, with no platform facts."""
    return actor if isinstance(actor, Principal) else Principal(actor, team_id, platform)


@dataclass(frozen=True)
class Policy:
    settings: Settings

    def is_admin(self, s: Session, who: Principal) -> bool:
        return (who.platform_admin or who.user in self.settings.admins
                or team.is_member(s, who.team_id, "admin", who.user))

    def is_approver(self, s: Session, who: Principal) -> bool:
        approvers = self.settings.approvers
        return ("*" in approvers or who.user in approvers
                or team.is_member(s, who.team_id, "approver", who.user))

    def may_decide(self, s: Session, obj: Objective, who: Principal) -> bool:
        """Approve or reject its plan, steps and budget: its requester, an approver, an admin
        of its team. Deciding is all an approver may do."""
        return who.team_id == obj.team_id and (
            who.user == obj.requester or self.is_approver(s, who) or self.is_admin(s, who))

    def may_steer(self, s: Session, obj: Objective, who: Principal) -> bool:
        """Cancel, pause or resume it: its requester or an admin of its team."""
        return who.team_id == obj.team_id and (who.user == obj.requester
                                               or self.is_admin(s, who))


def refusal(action: str) -> str:
    if action == "decide":
        return "Only the requester, an approver or an admin can decide this."
    return f"Only the requester or an admin can {action} this."


def admin_refusal(what: str) -> str:
    return f"Only an admin can {what}. {ADMIN_HINT}"
