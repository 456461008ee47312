"""The troubleshooter: a failed step's error -> retry, a replanned sub-DAG, or a question."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from swarm.agents.planner import PlanSpec, StepSpec, validate_plan
from swarm.agents.roles import Role, needs_approval
from swarm.llm.client import LLM, CallContext
from swarm.prompts import render
from swarm.states import StepState
from swarm.store.models import Intervention, Step

Action = Literal["retry", "replan", "ask_humans"]


class TroubleshootDecision(BaseModel):
    action: Action
    reason: str
    instructions: str  # retry: the step's new instructions
    steps: list[StepSpec]  # replan: the steps replacing it; depends_on names only each other
    question: str  # ask_humans: one precise question for the thread


@dataclass(frozen=True)
class FailedStep:
    """What the troubleshooter reads about the step that failed."""

    goal: str
    title: str
    role: str
    instructions: str
    error: str
    output: str | None


def validate_decision(d: TroubleshootDecision, roles: dict[str, Role], max_steps: int,
                      instructions: str) -> list[str]:
    errors = [] if d.reason.strip() else ["reason: say why this action should work"]
    if d.action == "retry":
        if not d.instructions.strip():
            errors.append("instructions: a retry needs the step's new instructions")
        elif d.instructions.strip() == instructions.strip():
            errors.append("instructions: a retry needs instructions that differ from the ones "
                          "that failed")
    elif d.action == "replan":
        errors += validate_plan(PlanSpec(rationale=d.reason, steps=d.steps), roles, max_steps)
    elif not d.question.strip():
        errors.append("question: ask_humans needs the question to ask")
    return errors


def history(s: Session, step_id: int) -> list[Intervention]:
    return list(s.scalars(select(Intervention).where(Intervention.step_id == step_id)
                          .order_by(Intervention.id)))


def objective_count(s: Session, objective_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(Intervention)
                        .where(Intervention.objective_id == objective_id)) or 0)


def revision_base(s: Session, step_id: int) -> int:
    """The step's attempts when it was last troubleshot: revisions are counted from there."""
    return int(s.scalar(select(func.max(Intervention.attempts))
                        .where(Intervention.step_id == step_id)) or 0)


async def decide(llm: LLM, troubleshooter: Role, roles: dict[str, Role], failed: FailedStep,
                 earlier: Sequence[Intervention], ctx: CallContext, *,
                 max_steps: int) -> TroubleshootDecision:
    """Ask the troubleshooter; its answer is re-asked while invalid (bounded) by the LLM layer."""
    role_lines = "\n".join(f"- {r.name}: {r.description}" for r in roles.values() if r.plannable)
    past = "\n".join(f"- #{i} {e.action}: {e.reason} (after: {e.error[:200]})"
                     for i, e in enumerate(earlier, 1)) or "(none)"
    messages = [{"role": "system", "content": troubleshooter.system_prompt},
                {"role": "user", "content": render(
                    "troubleshooter_user", goal=failed.goal, title=failed.title, role=failed.role,
                    instructions=failed.instructions, error=failed.error,
                    output=(failed.output or "(none)")[:2000], history=past, roles=role_lines,
                    max_steps=max_steps)}]
    return await llm.structured(
        troubleshooter.tier, messages, TroubleshootDecision, ctx,
        validate=lambda d: validate_decision(d, roles, max_steps, failed.instructions))


def replace_step(s: Session, step: Step, specs: list[StepSpec],
                 roles: dict[str, Role]) -> list[Step]:
    """Insert `specs` after `step` in its plan: steps without dependencies take the step's own,
    and every step that depended on it depends on the new steps nothing else waits for."""
    siblings = list(s.scalars(select(Step).where(Step.objective_id == step.objective_id,
                                                 Step.plan_version == step.plan_version)))
    taken = {st.key for st in siblings}
    keys: dict[str, str] = {}
    for i, spec in enumerate(specs, 1):
        key, n = f"{step.key}.{i}", i
        while key in taken:
            n += len(specs)
            key = f"{step.key}.{n}"
        keys[spec.key] = key
        taken.add(key)
    s.execute(update(Step).where(Step.objective_id == step.objective_id,
                                 Step.plan_version == step.plan_version,
                                 Step.position > step.position)
              .values(position=Step.position + len(specs)))
    new = [Step(objective_id=step.objective_id, plan_version=step.plan_version, key=keys[spec.key],
                position=step.position + i, title=spec.title[:200], role=spec.role,
                instructions=spec.instructions,
                depends_on=[keys[d] for d in spec.depends_on] or list(step.depends_on),
                needs_approval=needs_approval(roles, spec.role, spec.needs_approval),
                state=StepState.PENDING) for i, spec in enumerate(specs, 1)]
    s.add_all(new)
    waited_on = {d for spec in specs for d in spec.depends_on}
    sinks = [keys[spec.key] for spec in specs if spec.key not in waited_on]
    for other in siblings:
        if other.id != step.id and step.key in other.depends_on:
            rewired = [k for k in other.depends_on if k != step.key] + sinks
            other.depends_on = list(dict.fromkeys(rewired))
    return new


def detail_of(decision: TroubleshootDecision, new_steps: Sequence[Step]) -> tuple[str, Any]:
    """A line for the thread, and the decision's substance for the audit and the database."""
    if decision.action == "retry":
        return decision.instructions, {"instructions": decision.instructions}
    if decision.action == "replan":
        line = "; ".join(f"{st.key} {st.role}: {st.title}" for st in new_steps)
        return line, {"steps": [{"key": st.key, "title": st.title, "role": st.role,
                                 "depends_on": list(st.depends_on)} for st in new_steps]}
    return decision.question, {"question": decision.question}
