"""Grounding: the objective's constraints (the manager reads them with the plan) and the judge
that holds recent work against the goal, the constraints, the approved plan and the decisions."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from swarm.llm.client import LLM, CallContext
from swarm.prompts import render


class Constraints(BaseModel):
    market: str = Field(default="", description="country, region or locale; empty if unstated")
    audience: str = ""
    scope: str = Field(default="", description="what is in and what is out of scope")
    hard: list[str] = Field(default_factory=list, description="rules the work must never break")
    success: str = Field(default="", description="the success measure")

    def lines(self) -> list[str]:
        """Each constraint as one line: what the plan shows and the judge rules on."""
        named = [("market", self.market), ("audience", self.audience), ("scope", self.scope)]
        out = [f"{name}: {value}" for name, value in named if value.strip()]
        out += [f"must: {rule}" for rule in self.hard if rule.strip()]
        if self.success.strip():
            out.append(f"success: {self.success}")
        return out


class ConstraintRuling(BaseModel):
    constraint: str
    status: Literal["satisfied", "violated", "not_addressed"]
    evidence: str = Field(default="", description="quoted from the outputs")


class GroundingVerdict(BaseModel):
    aligned: bool
    score: float = Field(ge=0.0, le=1.0)
    constraints: list[ConstraintRuling] = Field(default_factory=list)
    drifted: str = Field(default="", description="what drifted, empty when aligned")
    correction: str = Field(default="", description="what the remaining steps should do")

    @property
    def violated(self) -> list[ConstraintRuling]:
        return [c for c in self.constraints if c.status == "violated"]


async def judge(llm: LLM, goal: str, constraints: list[str], plan: list[str],
                decisions: list[str], outputs: list[tuple[str, str]],
                ctx: CallContext) -> GroundingVerdict:
    """The judge (`fast` tier). `outputs` are (step title, output) pairs."""
    body = "\n".join(f"- [{title}] {text}" for title, text in outputs) or "(none)"
    messages = [
        {"role": "system", "content": render("judge_system")},
        {"role": "user", "content": render(
            "judge_user", goal=goal,
            constraints="\n".join(f"- {c}" for c in constraints) or "(none stated)",
            plan="\n".join(f"- {p}" for p in plan) or "(none)",
            decisions="\n".join(f"- {d}" for d in decisions) or "(none)", outputs=body)}]
    return await llm.structured("fast", messages, GroundingVerdict, ctx)
