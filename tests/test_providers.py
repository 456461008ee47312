"""Real providers through litellm, against local Anthropic and Ollama servers: every call is
priced or says that it cannot be, a USD budget is refused when it cannot hold, `ollama/` with
tools is steered to `ollama_chat/`, and a provider's own error keeps its meaning.

Prices registered with litellm stay registered for the whole test process (litellm's cost map
is global), so each test that prices a model uses a model no other test leaves unpriced."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from bot.console.render import spend_table, status_table
from swarm.config import SettingsError
from swarm.llm.budget import Ceiling
from swarm.llm.client import LLM, CallContext, LLMError
from swarm.llm.prices import parse_prices
from swarm.services.objectives import Swarm
from swarm.store.models import LLMCall, utcnow
from swarm.store.spend import daily_spend, team_spend
from tests.conftest import make_settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.scenarios import THREAD, run_goal
from tests.test_cli import Capture, _run

GOAL = "Launch a localized campaign for our SaaS in Japan"
HAIKU = "anthropic/claude-3-5-haiku-20241022"  # not in litellm 1.110's built-in price list
SONNET = "anthropic/claude-3-5-sonnet-latest"  # the README's example: not priced either
ASK = [{"role": "user", "content": "OBJECTIVE: x\nSTEP: Say hello\nINSTRUCTIONS: Greet."}]


@pytest.fixture
async def anthropic_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-secret")
    server = await FakeAnthropic().start()
    yield server
    await server.close()


@pytest.fixture
async def ollama_server() -> AsyncIterator[FakeOllama]:
    server = await FakeOllama().start()
    yield server
    await server.close()


def rows_of(swarm: Swarm, objective_id: int) -> list[LLMCall]:
    with swarm.db.read() as s:
        return list(s.scalars(select(LLMCall).where(LLMCall.objective_id == objective_id)))


async def test_an_objective_on_claude_costs_its_tokens_times_the_price_set_in_the_settings(
        make_swarm: Callable[..., Swarm], anthropic_server: FakeAnthropic) -> None:
    swarm = make_swarm(model=HAIKU, model_api_bases={HAIKU: anthropic_server.base_url},
                       model_prices=json.dumps({HAIKU: {"input": 0.8, "output": 4}}),
                       objective_budget_usd=5.0, llm_timeout_s=5.0)
    view = await run_goal(swarm, GOAL)
    assert view.state == "finished"

    rows = rows_of(swarm, view.id)
    usages = anthropic_server.usages
    assert len(rows) == len(usages) > 5 and all(r.ok for r in rows)
    expected = sum(u["input_tokens"] * 0.8e-6 + u["output_tokens"] * 4e-6 for u in usages)
    assert abs(sum(r.cost or 0.0 for r in rows) - expected) < 1e-12 and expected > 0
    assert all(r.cost is not None for r in rows)
    assert view.spend.show_cost() == f"${expected:.4f}"
    # structured output went through the forced tool litellm uses for this model
    assert any((b.get("tool_choice") or {}).get("name") == "json_tool_call"
               for b in anthropic_server.received)


async def test_an_objective_on_ollama_chat_finishes_and_its_unpriced_cost_shows_as_unknown(
        make_swarm: Callable[..., Swarm], ollama_server: FakeOllama,
        caplog: pytest.LogCaptureFixture) -> None:
    model = "ollama_chat/llama3.1"
    with caplog.at_level(logging.WARNING):
        swarm = make_swarm(model=model, model_api_bases={model: ollama_server.base_url},
                           llm_timeout_s=5.0)
        view = await run_goal(swarm, GOAL)
    assert view.state == "finished"
    assert any(b.get("tools") for b in ollama_server.received)  # workers were offered tools
    assert any(isinstance(b.get("format"), dict) for b in ollama_server.received)

    rows = rows_of(swarm, view.id)
    assert rows and all(r.ok and r.cost is None for r in rows)
    assert view.spend.unpriced == len(rows)
    assert view.spend.show_cost() == f"unknown ({len(rows)} calls unpriced)"
    assert "$0.0000" not in (view.summary or "") and "unknown" in (view.summary or "")
    with swarm.db.read() as s:
        days = daily_spend(s, utcnow() - timedelta(days=1), team_id=THREAD.team_id)
        month = team_spend(s, THREAD.team_id, utcnow() - timedelta(days=1))
    shown = Console(width=200, record=True, force_terminal=False)
    shown.print(status_table(view))  # `threadswarm status ID`
    shown.print(spend_table(days, {THREAD.team_id: (month, Ceiling())}))  # `status --spend`
    text = shown.export_text()
    assert "unknown" in text and "$0.0000" not in text
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith(f"llm.unpriced_model model={model} ") for m in said) == 1
    assert sum(m.startswith(f"llm.unpriced_call model={model} ") for m in said) == 1


async def test_a_price_from_a_yaml_file_prices_an_ollama_chat_model(
        tmp_path: Path, ollama_server: FakeOllama) -> None:
    model = "ollama_chat/qwen2.5"
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"{model}:\n  input: 0.1\n  output: 0.3\n")
    llm = LLM(make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", model=model,
                            model_api_bases={model: ollama_server.base_url},
                            model_prices=str(prices), llm_timeout_s=5.0))
    try:
        ctx = CallContext(objective_id=1)
        await llm.complete("worker", ASK, ctx)
    finally:
        llm.close()
    usage = ollama_server.usages[-1]
    assert llm.unpriced == []
    assert ctx.calls[0].cost == pytest.approx(
        usage["prompt_eval_count"] * 0.1e-6 + usage["eval_count"] * 0.3e-6, abs=1e-15)


async def test_a_usd_budget_with_an_unpriced_model_is_refused_at_start_up_unless_allowed(
        make_swarm: Callable[..., Swarm], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SettingsError) as refused:
        make_swarm(model="offline/rehearsal", worker_fallbacks=[SONNET],
                   team_monthly_budget_usd=20.0)
    said = str(refused.value)
    assert "THREADSWARM_TEAM_MONTHLY_BUDGET_USD cannot be enforced" in said
    assert SONNET in said and "THREADSWARM_MODEL_PRICES" in said
    assert "THREADSWARM_ALLOW_UNPRICED=true" in said

    with caplog.at_level(logging.WARNING):
        swarm = make_swarm(model="offline/rehearsal", worker_fallbacks=[SONNET],
                           team_monthly_budget_usd=20.0, allow_unpriced=True)
    assert swarm.llm.unpriced == [SONNET]
    assert any(r.getMessage().startswith("budget.usd_unenforced") for r in caplog.records)


def test_the_cli_says_what_to_set_when_a_usd_budget_meets_an_unpriced_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("THREADSWARM_MODEL", SONNET)
    monkeypatch.setenv("THREADSWARM_OBJECTIVE_BUDGET_USD", "1")
    code, text = _run(tmp_path, monkeypatch, capsys, "status")
    assert code == 2
    assert "THREADSWARM_OBJECTIVE_BUDGET_USD cannot be enforced" in " ".join(text.split())
    assert "Traceback" not in text


def test_invalid_prices_are_a_sentence_that_names_the_setting(tmp_path: Path) -> None:
    for bad in ('{"m": {"input": 1}}', '{"m": {"input": -1, "output": 2}}', "{not json",
                str(tmp_path / "missing.yaml"), '["m"]'):
        with pytest.raises(SettingsError, match="^THREADSWARM_MODEL_PRICES"):
            parse_prices(bad)
    assert parse_prices('{"m": {"input": 1, "output": 2, "cached": 0.5}}')["m"].cached == 0.5


async def test_ollama_with_tools_warns_at_start_up_to_use_ollama_chat(
        make_swarm: Callable[..., Swarm], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        make_swarm(model="offline/rehearsal", planner_model="ollama/mistral")  # no tools there
    assert not any("ollama_prefix" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING):
        make_swarm(model="offline/rehearsal", worker_model="ollama/llama3.1")
    warned = [r.getMessage() for r in caplog.records if "ollama_prefix" in r.getMessage()]
    assert warned == ["llm.ollama_prefix_breaks_tools tier=worker model=ollama/llama3.1 "
                      "use=ollama_chat/llama3.1"]


async def test_anthropic_overloaded_is_shown_as_overloaded_not_as_a_500(
        tmp_path: Path, anthropic_server: FakeAnthropic) -> None:
    model = "anthropic/claude-3-haiku-20240307"
    llm = LLM(make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", model=model,
                            model_api_bases={model: anthropic_server.base_url}, llm_retries=1,
                            llm_timeout_s=5.0))
    anthropic_server.fail_with.extend([529, 529])
    ctx = CallContext(objective_id=1)
    try:
        with pytest.raises(LLMError, match=r"provider overloaded \(529\)"):
            await llm.complete("worker", ASK, ctx)
    finally:
        llm.close()
    assert [c.error for c in ctx.calls] == ["provider overloaded (529)"] * 2
