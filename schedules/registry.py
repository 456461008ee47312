"""Every scheduled job in one registry: jobs are declared where they live, with a stable id.

`@every(job_id, interval)` only records the job; the clock adds what the registry holds. A job
function is named by reference ("module:function") and takes only ids, since the job store
pickles what it is given; it finds the running clock with `schedules.clock.current()`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from swarm.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
# the modules that declare jobs; importing them fills JOBS (a digest's and a recurring goal's
# jobs follow their rows: schedules.sync)
MODULES = ("schedules.approvals", "schedules.recurring", "schedules.grounding", "schedules.sync")


@dataclass(frozen=True)
class Declared:
    id: str
    func: str  # "module:function", what the job store keeps
    interval: Callable[[Settings], timedelta]


JOBS: dict[str, Declared] = {}


def ref(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def every(job_id: str, interval: Callable[[Settings], timedelta]) -> Callable[[F], F]:
    """Declare a job that runs every `interval(settings)`."""
    def register(fn: F) -> F:
        JOBS[job_id] = Declared(job_id, ref(fn), interval)
        return fn
    return register


def declared() -> list[Declared]:
    for module in MODULES:
        importlib.import_module(module)
    return list(JOBS.values())
