"""CPU per model call on the HTTP path: bare openai.AsyncOpenAI, bare litellm.acompletion and
swarm's LLM layer (litellm, the Router, booking, budgets), against one local OpenAI-compatible
server (the tests' fake) running in a process of its own, so only the client's CPU is counted.

Each step is two calls, as threadswarm makes them: a worker call with tools, then a critic
call with a structured answer. The LLM layer runs twice: without budgets (nothing to check, no
rows written), and with a token ceiling, booking every call as the Swarm does (a budget check
and hold before the call, its rows written and its hold released after). The clients run in
interleaved rounds (A B C D A B C D ...), so the machine's noise falls on all alike; the table
prints medians of the rounds and the ratios between them.

    python bench/llm_cpu.py [--quick] [--steps N] [--rounds N] [--profile]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import fmt, goal, median, model_server, off_by, table
from orchestration import _step_messages

from swarm.agents.critic import CriticVerdict
from swarm.config import Settings
from swarm.llm.budget import Budget
from swarm.llm.calls import CallBook
from swarm.llm.client import LLM, CallContext
from swarm.store import migrate
from swarm.store.db import Database
from swarm.store.models import Objective

MODEL = "openai/gpt-4o-mini"
Step = Callable[[], Awaitable[None]]


def clients(base: str, data_dir: Path) -> dict[str, Step]:
    import litellm
    import openai

    worker, critic, tools = _step_messages()
    bare_openai = openai.AsyncOpenAI(base_url=base, api_key="sk-bench-not-a-secret")
    schema = {"type": "json_schema", "json_schema": {
        "name": "CriticVerdict", "schema": CriticVerdict.model_json_schema(), "strict": False}}

    async def openai_step() -> None:
        await bare_openai.chat.completions.create(model="gpt-4o-mini", messages=worker,  # type: ignore[arg-type]
                                                  tools=tools)  # type: ignore[arg-type]
        answer = await bare_openai.chat.completions.create(
            model="gpt-4o-mini", messages=critic, response_format=schema)  # type: ignore[arg-type]
        CriticVerdict.model_validate_json(answer.choices[0].message.content or "")

    async def litellm_step() -> None:
        await litellm.acompletion(model=MODEL, messages=worker, tools=tools, api_base=base,
                                  timeout=60)
        answer = await litellm.acompletion(model=MODEL, messages=critic, api_base=base,
                                           response_format=CriticVerdict, timeout=60)
        CriticVerdict.model_validate_json(answer.choices[0].message.content or "")

    settings = Settings(database_url=f"sqlite:///{data_dir}/bench.db", data_dir=data_dir,
                        model=MODEL, model_api_bases={MODEL: base}, memory_enabled=False,
                        allow_unpriced=True)
    llm = LLM(settings)

    async def swarm_step() -> None:
        ctx = CallContext()
        await llm.complete("worker", worker, ctx, tools=tools)
        await llm.structured("fast", critic, CriticVerdict, ctx)

    budgeted = settings.model_copy(update={"objective_budget_tokens": 10**12})
    db = Database.connect(budgeted.url)
    migrate.upgrade(db)
    with db.tx() as s:
        objective = Objective(goal="bench", platform="console", team_id="T1", channel_id="c",
                              thread_id="t", requester="bench", state="running")
        s.add(objective)
    budget = Budget(budgeted, db)
    booked = LLM(budgeted, budget)
    booked.book = CallBook(db)

    async def budgeted_step() -> None:
        ctx = CallContext(objective_id=objective.id, team_id="T1")
        await booked.complete("worker", worker, ctx, tools=tools)
        await booked.structured("fast", critic, CriticVerdict, ctx)

    return {"openai.AsyncOpenAI": openai_step, "litellm.acompletion": litellm_step,
            "swarm LLM layer": swarm_step, "swarm LLM layer, budgeted": budgeted_step}


async def cpu_per_call(step: Step, steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        await step()
    await asyncio.sleep(0.05)  # litellm finishes its logging in the background
    return (time.process_time() - start) / (2 * steps)


async def measure(base: str, steps: int, rounds: int, profile: bool) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        steps_by = clients(base, Path(tmp))
        for step in steps_by.values():
            for _ in range(10):
                await step()  # warm: imports, connection pools, cost maps
        out: dict[str, list[float]] = {name: [] for name in steps_by}
        for _ in range(rounds):
            for name, step in steps_by.items():
                out[name].append(await cpu_per_call(step, steps))
        if profile:
            for name in ("litellm.acompletion", "swarm LLM layer"):
                prof = cProfile.Profile()
                prof.enable()
                await cpu_per_call(steps_by[name], steps)
                prof.disable()
                print(f"\n## profile: {name}\n", file=sys.stderr)
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return out


def report(out: dict[str, list[float]], steps: int, rounds: int) -> str:
    base = median(out["litellm.acompletion"])
    rows = [[name, f"{median(v) * 1000:.2f}", f"{min(v) * 1000:.2f}", f"{max(v) * 1000:.2f}",
             fmt(median(v) / base)] for name, v in out.items()]
    ratios = {name: median(out[name]) / base
              for name in ("swarm LLM layer", "swarm LLM layer, budgeted")}
    goals = table(["goal", "figure", "verdict"], [
        goal(f"{name} CPU per call <= 1.15x bare litellm.acompletion (HTTP path)",
             f"{fmt(r)}x", off_by(r, 1.15))
        for name, r in ratios.items()])
    return (f"## CPU per call, HTTP path ({rounds} rounds of {steps} steps, 2 calls a step)\n\n"
            + table(["client", "median ms", "min ms", "max ms", "÷ litellm"], rows)
            + "\n\n" + goals)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    steps = args.steps or (30 if args.quick else 150)
    rounds = args.rounds or (3 if args.quick else 7)
    with model_server() as base:
        out = asyncio.run(measure(base, steps, rounds, args.profile))
    print(report(out, steps, rounds))


if __name__ == "__main__":
    main()
