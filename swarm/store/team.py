"""A team's own settings, changed by commands: its admins, approvers, budgets and digests."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from swarm.store.guards import changed
from swarm.store.models import TeamMember, TeamSetting, utcnow

ROLES = ("admin", "approver")


def members(s: Session, team_id: str, role: str) -> list[str]:
    return list(s.scalars(select(TeamMember.user).where(
        TeamMember.team_id == team_id, TeamMember.role == role).order_by(TeamMember.id)))


def is_member(s: Session, team_id: str, role: str, user: str) -> bool:
    return s.scalar(select(TeamMember.id).where(
        TeamMember.team_id == team_id, TeamMember.role == role,
        TeamMember.user == user)) is not None


def add_member(s: Session, team_id: str, role: str, user: str, by: str) -> bool:
    """False when `user` already has the role (here or in a racing process: the unique key)."""
    try:
        with s.begin_nested():
            s.add(TeamMember(team_id=team_id, role=role, user=user, added_by=by))
    except IntegrityError:
        return False
    return True


def remove_member(s: Session, team_id: str, role: str, user: str) -> bool:
    return changed(s, delete(TeamMember).where(
        TeamMember.team_id == team_id, TeamMember.role == role, TeamMember.user == user)
        .execution_options(synchronize_session=False))


def setting(s: Session, team_id: str, name: str) -> dict[str, Any] | None:
    return s.scalar(select(TeamSetting.value).where(TeamSetting.team_id == team_id,
                                                    TeamSetting.name == name))


def put_setting(s: Session, team_id: str, name: str, value: dict[str, Any] | None,
                by: str) -> None:
    """Set (or with None, clear) one setting; the unique key keeps one row per team and name."""
    where = (TeamSetting.team_id == team_id, TeamSetting.name == name)
    if value is None:
        s.execute(delete(TeamSetting).where(*where).execution_options(synchronize_session=False))
        return
    values = {"value": value, "updated_by": by, "updated_at": utcnow()}
    if changed(s, update(TeamSetting).where(*where).values(**values)
               .execution_options(synchronize_session=False)):
        return
    try:
        with s.begin_nested():
            s.add(TeamSetting(team_id=team_id, name=name, **values))
    except IntegrityError:  # another process inserted it meanwhile: ours is the later word
        s.execute(update(TeamSetting).where(*where).values(**values)
                  .execution_options(synchronize_session=False))
