"""The manager: goal (+ recalled memory) -> a validated plan DAG, re-asked when invalid."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, Field

from swarm.agents.grounding import Constraints
from swarm.agents.roles import Role
from swarm.llm.client import LLM, CallContext, StructuredOutputError
from swarm.prompts import quote, render

log = logging.getLogger(__name__)


class StepSpec(BaseModel):
    key: str = Field(description="short unique id, e.g. s1")
    title: str
    role: str
    instructions: str
    depends_on: list[str] = Field(default_factory=list)
    needs_approval: bool = False
    team: bool = Field(default=False, description="a sizeable sub-project: a team of its own "
                                                  "plans and does it, and reports one summary")


class PlanSpec(BaseModel):
    rationale: str
    steps: list[StepSpec]
    # read from the goal with the plan, shown with it and approved with it
    constraints: Constraints = Field(default_factory=Constraints)


class PlanError(RuntimeError):
    """The manager could not produce a valid plan; the message says why, for the thread."""


@dataclass(frozen=True)
class PlanLimits:
    """How big a plan may be where it is planned: its own bound, and what the tree of teams it
    belongs to has left (THREADSWARM_MAX_TREE_STEPS, THREADSWARM_MAX_DEPTH)."""

    max_steps: int
    teams: bool = True  # whether a step may be a team of its own here
    tree_left: int | None = None  # steps the whole tree may still grow by (None: no tree yet)
    max_tree_steps: int = 0
    max_depth: int = 0

    @property
    def steps(self) -> int:
        return self.max_steps if self.tree_left is None else min(self.max_steps, self.tree_left)


def limit_errors(plan: PlanSpec, limits: PlanLimits, *, own_bound: bool = True) -> list[str]:
    """The one home of the size and depth rules, for the manager's re-ask and the last check
    (which leaves a custom planner's own plan size to it: `own_bound` False)."""
    errors: list[str] = []
    n = len(plan.steps)
    if limits.tree_left is not None and n > limits.tree_left:
        errors.append(f"this team may plan at most {max(limits.tree_left, 0)} steps, not {n}: "
                      f"its tree of teams holds at most {limits.max_tree_steps} steps "
                      f"(THREADSWARM_MAX_TREE_STEPS)")
    elif own_bound and not 1 <= n <= limits.max_steps:
        errors.append(f"a plan needs between 1 and {limits.max_steps} steps, not {n}")
    if not limits.teams:
        errors += [f"step {s.key}: cannot be a team: teams nest at most {limits.max_depth} deep "
                   f"(THREADSWARM_MAX_DEPTH); plan it as a plain step" for s in plan.steps
                   if s.team]
    return errors


def validate_plan(plan: PlanSpec, roles: dict[str, Role], max_steps: int | PlanLimits
                  ) -> list[str]:
    limits = max_steps if isinstance(max_steps, PlanLimits) else PlanLimits(max_steps)
    errors = limit_errors(plan, limits)
    keys = [s.key for s in plan.steps]
    if len(set(keys)) != len(keys):
        errors.append("step keys must be unique")
    plannable = {name for name, r in roles.items() if r.plannable}
    for s in plan.steps:
        if s.role not in plannable:
            errors.append(f"step {s.key}: unknown role {s.role!r} (use one of "
                          f"{', '.join(sorted(plannable))})")
        for dep in s.depends_on:
            if dep not in keys:
                errors.append(f"step {s.key}: depends on unknown step {dep!r}")
            elif dep == s.key:
                errors.append(f"step {s.key}: depends on itself")
    if not errors and (cycle := find_cycle(plan)):
        errors.append("the dependencies form a cycle: " + " -> ".join(cycle))
    return errors


def find_cycle(plan: PlanSpec) -> list[str] | None:
    deps = {s.key: s.depends_on for s in plan.steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        path.append(key)
        for dep in deps[key]:
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[key] = 2
        return None

    for key in deps:
        if key not in state and (found := visit(key)):
            return found
    return None


async def make_plan(llm: LLM, goal: str, roles: dict[str, Role], memories: list[str],
                    ctx: CallContext, *, max_steps: int | PlanLimits, repair_attempts: int,
                    feedback: str | None = None) -> PlanSpec:
    limits = max_steps if isinstance(max_steps, PlanLimits) else PlanLimits(max_steps)
    role_lines = "\n".join(f"- {r.name}: {r.description}" for r in roles.values() if r.plannable)
    memory = quote("team memory", "\n".join(f"- {m}" for m in memories)) if memories \
        else "(none)"
    messages = [
        {"role": "system", "content": render("planner_system", roles=role_lines,
                                             max_steps=limits.steps,
                                             teams=render("planner_teams" if limits.teams
                                                          else "planner_no_teams"),
                                             data_rule=render("data_rule"))},
        {"role": "user", "content": render("planner_user", goal=goal, memory=memory)},
    ]
    if feedback:  # the humans rejected the last plan and said why: this plan answers that
        messages[1]["content"] += "\n" + render("planner_feedback", feedback=feedback)
    try:
        return await llm.structured("planner", messages, PlanSpec, ctx,
                                    validate=lambda plan: validate_plan(plan, roles, limits),
                                    repair_attempts=repair_attempts)
    except StructuredOutputError as exc:
        raise PlanError(f"The manager could not produce a valid plan after {exc.attempts} "
                        f"attempts: {'; '.join(exc.errors)}") from exc
