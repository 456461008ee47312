"""The critic: reviews a step's output against the step and the objective."""
from __future__ import annotations

import logging

from pydantic import BaseModel

from swarm.agents.roles import Role
from swarm.agents.worker import StepBrief
from swarm.llm.client import LLM, CallContext, LLMError, StructuredOutputError
from swarm.prompts import render

log = logging.getLogger(__name__)


class CriticVerdict(BaseModel):
    approved: bool
    critique: str


async def review(llm: LLM, critic: Role, brief: StepBrief, output: str,
                 ctx: CallContext) -> CriticVerdict:
    messages = [{"role": "system", "content": critic.system_prompt},
                {"role": "user", "content": render("critic_user", goal=brief.goal,
                                                   title=brief.title,
                                                   instructions=brief.instructions,
                                                   output=output)}]
    try:
        return await llm.structured(critic.tier, messages, CriticVerdict, ctx)
    except StructuredOutputError:
        raise  # still invalid after re-asks and the fallback models: the step fails, clearly
    except LLMError as exc:
        # A critic outage must not throw away good work: accept, and say it was not reviewed.
        log.warning("critic.unavailable error=%s", exc)
        return CriticVerdict(approved=True, critique=f"(not reviewed: {exc})")
