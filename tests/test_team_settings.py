"""A team's admins, approvers and budgets, as commands store them, on both databases."""
from __future__ import annotations

from swarm.contract import Principal
from swarm.services.objectives import Swarm

ADMIN = Principal("U0BOSS", "T1", "slack", platform_admin=True)


async def test_members_and_budgets_are_kept_per_team_and_read_back(swarm: Swarm) -> None:
    team = swarm.team
    assert team.add_member(ADMIN, "approver", "U0CAROL").ok
    assert not team.add_member(ADMIN, "approver", "U0CAROL").ok  # the unique key holds
    assert team.members(ADMIN, "approver") == ["U0CAROL"]
    assert team.members(Principal("x", "T2"), "approver") == []
    assert team.set_budget(ADMIN, "team", usd=25.0).ok
    assert team.set_budget(ADMIN, "team", tokens=50_000).ok  # the other dimension stays
    view = team.budgets(ADMIN)
    assert (view.team.usd, view.team.tokens) == (25.0, 50_000) and view.objective.unlimited
    assert team.set_budget(ADMIN, "team", usd=None, tokens=None).ok
    assert team.budgets(ADMIN).team.unlimited
    assert team.remove_member(ADMIN, "approver", "U0CAROL").ok
    assert not team.remove_member(ADMIN, "approver", "U0CAROL").ok
    refused = team.set_budget(Principal("U0MALLORY", "T1", "slack"), "objective", usd=1.0)
    assert not refused.ok and refused.message.startswith("Only an admin can change the budget")


async def test_a_team_budget_set_by_command_holds_the_objective(swarm: Swarm) -> None:
    from tests.scenarios import THREAD

    admin = Principal("U0BOSS", THREAD.team_id, "console", platform_admin=True)
    assert swarm.team.set_budget(admin, "objective", tokens=50).ok  # less than one call
    started = await swarm.start_objective("Write a launch announcement", THREAD, "alice", "e1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "paused"
    assert "budget" in (view.reason or "")
