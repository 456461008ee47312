"""Accounting: every attempt that reached the provider, at the figures the provider reported."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import litellm
from sqlalchemy import select

from swarm.services.objectives import Swarm
from swarm.store.models import LLMCall, StepRun, utcnow
from swarm.store.spend import daily_spend, team_spend
from tests.fakes.openai_server import FakeOpenAI, server_error
from tests.scenarios import THREAD, outbox_kinds, run_goal

GOAL = "Launch a localized campaign for our SaaS in Japan"
MODEL = "openai/gpt-4o-mini"  # priced in litellm's cost map, served by the fake


def over_fake(server: FakeOpenAI, **overrides: object) -> dict[str, object]:
    return {"model": MODEL, "model_api_bases": {MODEL: server.base_url}, "llm_timeout_s": 5.0,
            **overrides}


async def test_tokens_and_cost_in_the_database_are_the_sums_the_server_reported(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    openai_server.cached_tokens = 4
    openai_server.script("gpt-4o-mini", server_error())  # the planner's first attempt fails
    swarm = make_swarm(**over_fake(openai_server))
    view = await run_goal(swarm, GOAL)
    assert view.state == "finished"

    with swarm.db.read() as s:
        rows = s.scalars(select(LLMCall).where(LLMCall.objective_id == view.id)).all()
        runs = s.scalars(select(StepRun).where(StepRun.objective_id == view.id)).all()
        day = daily_spend(s, utcnow() - timedelta(days=1), team_id=THREAD.team_id)
        month = team_spend(s, THREAD.team_id, utcnow() - timedelta(days=1))
    answered = [r for r in openai_server.requests() if r.status == 200]
    reported = openai_server.reported()
    # one row per request that reached the server: the 500 is there, with no tokens
    assert len(rows) == len(openai_server.requests()) and sum(not r.ok for r in rows) == 1
    assert sum(r.prompt_tokens for r in rows) == reported["prompt_tokens"] > 0
    assert sum(r.completion_tokens for r in rows) == reported["completion_tokens"] > 0
    assert sum(r.cached_tokens for r in rows) == reported["cached_tokens"] > 0

    price = litellm.model_cost["gpt-4o-mini"]
    expected = sum((u["prompt_tokens"] - u["prompt_tokens_details"]["cached_tokens"])
                   * price["input_cost_per_token"]
                   + u["prompt_tokens_details"]["cached_tokens"]
                   * price["cache_read_input_token_cost"]
                   + u["completion_tokens"] * price["output_cost_per_token"]
                   for u in (r.usage for r in answered) if u is not None)
    assert abs(sum(r.cost for r in rows) - expected) < 1e-12 and expected > 0

    # every step's call is booked to its attempt; summed per step, objective, team and day
    step_rows = [r for r in rows if r.step_id is not None]
    assert step_rows and {r.run_id for r in step_rows} <= {r.id for r in runs}
    per_step = {st.id: st.spend for st in view.steps}
    assert sum(sp.tokens for sp in per_step.values()) == sum(
        r.prompt_tokens + r.completion_tokens for r in step_rows)
    assert view.spend.prompt_tokens == reported["prompt_tokens"]
    assert view.spend.cached_tokens == reported["cached_tokens"]
    assert abs(view.cost - expected) < 1e-12 and view.spend.failed == 1
    assert [d.spend for d in day] == [month] and month.calls == len(rows)
    assert "CallRetried" in outbox_kinds(swarm, view.id)  # the retry was shown in the thread
