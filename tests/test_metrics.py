"""GET /metrics through the real HTTP server, parsed as Prometheus parses it."""
from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from swarm.store.models import LLMCall, StepRun
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import Bot, start_bot
from tests.test_slack import approve_step_and_finish, click, mention, objective_id

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(bot: Bot) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.url}/metrics") as resp:
        assert resp.status == 200
        body = await resp.text()
        kind = resp.headers["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kind, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and labels.items() <= dict(ls).items())


async def test_metrics_show_the_objectives_runs_calls_outbox_approvals_and_drift_checks(
        tmp_path: Any, db_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, db_url, api)
    try:
        kind, before = await scrape(bot)
        assert kind.startswith("text/plain")
        assert total(before, "threadswarm_objectives") == 0
        assert total(before, "threadswarm_llm_calls_total") == 0

        plan, _ = await mention(bot, api, "launch our SaaS in Japan")
        oid = objective_id(bot)
        _, waiting = await scrape(bot)
        assert total(waiting, "threadswarm_objectives", state="awaiting_approval") == 1
        assert total(waiting, "threadswarm_approvals_pending") == 1
        assert total(waiting, "threadswarm_approval_oldest_pending_age_seconds") > 0
        await click(bot, plan)
        await approve_step_and_finish(bot, api, oid)
        await bot.runtime.settle()

        _, after = await scrape(bot)
        with bot.runtime.db.read() as s:
            calls = s.scalar(select(func.count()).select_from(LLMCall))
            tokens = s.scalar(select(func.sum(LLMCall.prompt_tokens)))
            accepted = s.scalar(select(func.count()).select_from(StepRun)
                                .where(StepRun.state == "accepted"))
    finally:
        await bot.close()
    assert total(after, "threadswarm_objectives", state="finished") == 1
    assert total(after, "threadswarm_objectives", state="running") == 0  # every state shown
    assert total(after, "threadswarm_step_runs", state="accepted") == accepted == 5
    assert total(after, "threadswarm_llm_calls_total", outcome="ok") == calls > 0
    assert total(after, "threadswarm_llm_tokens_total", kind="prompt") == tokens > 0
    assert ("threadswarm_llm_cost_usd_total", (("tier", "planner"),)) in after
    assert total(after, "threadswarm_outbox_open") == 0
    assert total(after, "threadswarm_outbox_oldest_open_age_seconds") == 0
    lag = {dict(ls)["quantile"]: v for (n, ls), v in after.items()
           if n == "threadswarm_outbox_delivery_lag_seconds"}
    assert set(lag) == {"0.5", "0.99"} and 0 <= lag["0.5"] <= lag["0.99"]
    assert total(after, "threadswarm_approvals_pending") == 0
    waits = {dict(ls)["quantile"]: v for (n, ls), v in after.items()
             if n == "threadswarm_approval_wait_seconds"}
    assert set(waits) == {"0.5", "0.99"} and 0 < waits["0.5"] <= waits["0.99"]
    # a grounding check after every third step (THREADSWARM_GROUNDING_AFTER_STEPS)
    assert total(after, "threadswarm_drift_checks_total") >= 1
