"""The LLM layer over HTTP: litellm's Router against a local OpenAI-compatible server."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.agents.critic import CriticVerdict
from swarm.config import Settings
from swarm.llm.client import LLM, CallContext, LLMError, StructuredOutputError
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, invalid_json, ok, rate_limited, server_error, slow

PRIMARY, FALLBACK = "openai/gpt-4o-mini", "openai/fake-b"
ASK = [{"role": "user", "content": "OBJECTIVE: x\nSTEP: Say hello\nINSTRUCTIONS: Greet."}]
VERDICT = '{"approved": true, "critique": "Fine."}'


def fake_settings(tmp_path: Path, server: FakeOpenAI, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model": PRIMARY, "llm_timeout_s": 5.0,
        "model_api_bases": {PRIMARY: server.base_url, FALLBACK: server.base_url}}
    values.update(overrides)
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", **values)


@pytest.fixture
def llms() -> Iterator[list[LLM]]:
    made: list[LLM] = []
    yield made
    for llm in made:
        llm.close()


def make_llm(llms: list[LLM], settings: Settings) -> LLM:
    llms.append(LLM(settings))
    return llms[-1]


async def test_a_429_is_retried_after_the_delay_its_retry_after_asks_for(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server))
    openai_server.script("gpt-4o-mini", rate_limited(retry_after=1))
    ctx = CallContext(objective_id=1, team_id="T1")
    reply = await llm.complete("worker", ASK, ctx)

    first, second = openai_server.requests()
    assert (first.status, second.status) == (429, 200)
    assert 1.0 <= second.at - first.at < 1.9  # Retry-After: 1, plus at most a little jitter
    assert "Say hello" in reply.content
    assert [(c.ok, c.error) for c in ctx.calls] == [(False, "RateLimitError (429)"), (True, None)]
    assert ctx.calls[0].prompt_tokens == 0 and ctx.calls[1].prompt_tokens == second.usage[
        "prompt_tokens"]


async def test_a_model_that_answers_500_three_times_is_replaced_by_its_fallback(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server, worker_fallbacks=[FALLBACK]))
    openai_server.script("gpt-4o-mini", server_error(), server_error(), server_error())
    ctx = CallContext(objective_id=1)
    await llm.complete("worker", ASK, ctx)

    assert [(r.model, r.status) for r in openai_server.requests()] == [
        ("gpt-4o-mini", 500), ("gpt-4o-mini", 500), ("gpt-4o-mini", 500), ("fake-b", 200)]
    assert [(c.model, c.ok) for c in ctx.calls] == [
        (PRIMARY, False), (PRIMARY, False), (PRIMARY, False), (FALLBACK, True)]
    assert ctx.calls[0].error == "InternalServerError (500)"


async def test_a_call_that_times_out_is_retried(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server, llm_timeout_s=0.3))
    openai_server.script("gpt-4o-mini", slow(3.0))
    ctx = CallContext(objective_id=1)
    started = time.monotonic()
    await llm.complete("worker", ASK, ctx)

    assert time.monotonic() - started < 2.0  # the slow answer was not waited for
    assert len(openai_server.requests()) == 2
    assert [(c.ok, c.error) for c in ctx.calls] == [(False, "Timeout (408)"), (True, None)]


async def test_a_model_with_no_fallback_is_retried_then_fails_with_a_clear_error(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    # a tier of one model goes to litellm without the Router: the same retries must hold
    llm = make_llm(llms, fake_settings(tmp_path, openai_server, llm_retries=2))
    openai_server.script("gpt-4o-mini", server_error(), server_error(), server_error())
    ctx = CallContext(objective_id=1)
    with pytest.raises(LLMError, match=r"worker model \(openai/gpt-4o-mini\) failed: "
                                       r"InternalServerError \(500\)"):
        await llm.complete("worker", ASK, ctx)
    assert [r.status for r in openai_server.requests()] == [500, 500, 500]
    assert [(c.ok, c.error) for c in ctx.calls] == [(False, "InternalServerError (500)")] * 3


async def test_a_request_the_provider_refuses_as_wrong_is_not_retried(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server))
    openai_server.script("gpt-4o-mini", server_error(400))
    ctx = CallContext(objective_id=1)
    with pytest.raises(LLMError, match=r"BadRequestError \(400\)"):
        await llm.complete("worker", ASK, ctx)
    assert len(openai_server.requests()) == 1  # the same request would fail the same way
    assert [c.ok for c in ctx.calls] == [False]


async def test_a_model_that_keeps_failing_is_skipped_for_its_cooldown(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server, worker_fallbacks=[FALLBACK],
                                       llm_allowed_fails=2, llm_cooldown_s=30))
    openai_server.script("gpt-4o-mini", server_error(), server_error(), server_error())
    await llm.complete("worker", ASK, CallContext(objective_id=1))
    assert len(openai_server.requests("gpt-4o-mini")) == 3  # three failures open the circuit

    ctx = CallContext(objective_id=1)
    await llm.complete("worker", ASK, ctx)
    assert len(openai_server.requests("gpt-4o-mini")) == 3  # skipped: not even asked
    assert [(c.model, c.ok) for c in ctx.calls] == [(FALLBACK, True)]


async def test_invalid_structured_output_is_reasked_with_the_validation_error(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server))
    openai_server.script("gpt-4o-mini", invalid_json(), ok(VERDICT))
    ctx = CallContext(objective_id=1)
    verdict = await llm.structured("fast", ASK, CriticVerdict, ctx)

    assert verdict == CriticVerdict(approved=True, critique="Fine.")
    first, second = openai_server.requests()
    assert first.schema == second.schema == "CriticVerdict"
    assert "VALIDATION ERRORS" not in first.text
    assert "VALIDATION ERRORS: your previous answer was not a valid CriticVerdict" in second.text
    assert "Invalid JSON" in second.text  # pydantic's own words for what was wrong
    assert len(ctx.calls) == 2 and all(c.ok for c in ctx.calls)


async def test_structured_output_that_stays_invalid_goes_to_the_next_model_then_fails_clearly(
        tmp_path: Path, openai_server: FakeOpenAI, llms: list[LLM]) -> None:
    llm = make_llm(llms, fake_settings(tmp_path, openai_server, fast_fallbacks=[FALLBACK],
                                       structured_repair_attempts=1))
    openai_server.script("gpt-4o-mini", invalid_json(), invalid_json())
    openai_server.script("fake-b", invalid_json(), invalid_json())
    with pytest.raises(StructuredOutputError) as failed:
        await llm.structured("fast", ASK, CriticVerdict, CallContext(objective_id=1))

    assert failed.value.attempts == 4 and "not a valid CriticVerdict after 4 attempts" in str(
        failed.value)
    sent = openai_server.requests()
    assert [r.model for r in sent] == ["gpt-4o-mini", "gpt-4o-mini", "fake-b", "fake-b"]
    assert "VALIDATION ERRORS" in sent[1].text and "VALIDATION ERRORS" not in sent[2].text
