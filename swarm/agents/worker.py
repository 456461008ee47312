"""Workers: one step's attempt at its output, with the role's tools."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from swarm.agents.roles import Role
from swarm.agents.tools import NeedsHumans, ToolContext, ToolRegistry
from swarm.llm.client import LLM, CallContext
from swarm.prompts import quote, render

log = logging.getLogger(__name__)


@dataclass
class StepBrief:
    """Everything a worker sees of its step."""

    goal: str
    title: str
    instructions: str
    inputs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answers: list[tuple[str, str]] = field(default_factory=list)
    critique: str | None = None

    def prompt(self) -> str:
        return render(
            "worker_user", goal=self.goal, title=self.title, instructions=self.instructions,
            inputs="\n".join(f"- {t}: {o}" for t, o in self.inputs) or "(none)",
            notes="\n".join(f"- {n}" for n in self.notes) or "(none)",
            answers="\n".join(f"Q: {q}\nA: {a}" for q, a in self.answers) or "(none)",
            critique=self.critique or "(none)")


@dataclass
class WorkerResult:
    output: str | None = None
    question: str | None = None


async def run_worker(llm: LLM, role: Role, brief: StepBrief, tools: ToolRegistry,
                     tool_ctx: ToolContext, ctx: CallContext, max_rounds: int) -> WorkerResult:
    system = f"{role.system_prompt}\n{render('data_rule')}" if role.tools else role.system_prompt
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": brief.prompt()}]
    schemas = tools.schemas(role.tools)
    for _ in range(max_rounds):
        reply = await llm.complete(role.tier, messages, ctx, tools=schemas or None)
        if not reply.tool_calls:
            return WorkerResult(output=reply.content)
        messages.append(reply.message)
        for call in reply.tool_calls:
            try:
                result = await tools.call(call.name, tool_ctx, call.arguments,
                                          allowed=role.tools)
            except NeedsHumans as ask:
                return WorkerResult(question=ask.question)
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": quote(f"tool {call.name}", result)})
    reply = await llm.complete(role.tier, messages, ctx)  # out of tool rounds: answer now
    return WorkerResult(output=reply.content)
