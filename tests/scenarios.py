"""Small helpers that drive a swarm the way a thread of humans would."""
from __future__ import annotations

from sqlalchemy import select

from swarm.services.objectives import Swarm
from swarm.store.models import OutboxEvent, StepRun, ThreadRef
from swarm.store.views import ObjectiveView

THREAD = ThreadRef("console", "team-a", "general", "t-1")


async def approve_all(swarm: Swarm, objective_id: int, user: str = "alice") -> ObjectiveView:
    """Approve the plan and every risky step as they come, until the objective rests."""
    while True:
        await swarm.join()
        pending = swarm.pending_approvals(objective_id)
        if not pending:
            break
        for approval in pending:
            assert (await swarm.decide(approval.id, user, True)).ok
    view = swarm.view(objective_id)
    assert view is not None
    return view


async def run_goal(swarm: Swarm, goal: str, key: str = "evt-1",
                   thread: ThreadRef = THREAD) -> ObjectiveView:
    started = await swarm.start_objective(goal, thread, "alice", key)
    return await approve_all(swarm, started.objective_id)


def outbox_kinds(swarm: Swarm, objective_id: int) -> list[str]:
    with swarm.db.read() as s:
        return list(s.scalars(select(OutboxEvent.kind).where(
            OutboxEvent.objective_id == objective_id).order_by(OutboxEvent.id)))


def runs_by_key(swarm: Swarm, objective_id: int) -> dict[str, list[StepRun]]:
    view = swarm.view(objective_id)
    assert view is not None
    keys = {st.id: st.key for st in view.steps}
    out: dict[str, list[StepRun]] = {k: [] for k in keys.values()}
    with swarm.db.read() as s:
        for run in s.scalars(select(StepRun).where(StepRun.objective_id == objective_id)
                             .order_by(StepRun.id)):
            out[keys[run.step_id]].append(run)
    return out
