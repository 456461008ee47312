"""Every table of ours, as the models declare them: what migrations must create.

The composition root's business, since the tables live in three layers: the swarm's models,
the schedules' (on the swarm's metadata) and team memory's (its own metadata, memory imports
nothing of ours). Autogenerate (alembic.ini's `target_metadata`) and the schema test read it.
"""
from __future__ import annotations

from sqlalchemy import MetaData

import schedules.tables  # noqa: F401  (its models join the swarm's metadata)
from memory.tables import memory_tables
from swarm.store.models import Base


def metadata() -> list[MetaData]:
    return [Base.metadata, memory_tables().metadata]
