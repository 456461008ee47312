"""Trees of teams: an objective, the teams (child objectives) below it, and those above it."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarm.store.models import Objective


def lineage(s: Session, objective_id: int) -> list[int]:
    """The objective, then its parent, and so on up to the root of its tree."""
    ids = [objective_id]
    while (parent := s.scalar(select(Objective.parent_id).where(Objective.id == ids[-1]))) \
            is not None and parent not in ids:
        ids.append(parent)
    return ids


def subtree(s: Session, objective_id: int) -> list[int]:
    """The objective and every team below it (what its budget pays for, what it waits on)."""
    ids, frontier = [objective_id], [objective_id]
    while frontier:
        frontier = [i for i in s.scalars(select(Objective.id).where(
            Objective.parent_id.in_(frontier))) if i not in ids]
        ids += frontier
    return ids
