"""The path users run: threadswarm and LangGraph against the same HTTP model server.

One local OpenAI-compatible server (the tests' fake, in a process of its own; a prompt that
carries `[latency:N]` is answered after N ms) is called by:

- **threadswarm**: the product path on SQLite (`Swarm`, the engine, the step runner, its real
  LLM layer: litellm, the Router where a tier has fallbacks, booking, budgets), model
  `openai/gpt-4o-mini` at the server's URL;
- **LangGraph + ChatOpenAI** (`langchain-openai`), no checkpointer;
- **LangGraph + ChatLiteLLM** (`langchain-litellm`), no checkpointer.

Every step makes the same two calls on all three: a worker call (the researcher's system
prompt and the step's brief), then a critic call answered as `CriticVerdict` (structured
output). A step of latency L carries `[latency:L/2]` in both prompts, so each call waits L/2
on the server. LangGraph runs without a checkpointer (its fastest); threadswarm commits every
transition. Shapes and concurrencies are orchestration.py's: layered 8x5 and a long step
beside a chain, L=50 ms at 1 and 10 objectives, L=1 s at 100.

    python bench/http_path.py [--quick] [--repeats N] [--only TEXT]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import Sample, Shape, goal, layered, long_step_vs_chain, machine, model_server, table
from orchestration import (
    HTTP_MODEL,
    RUN_TIMEOUT_S,
    DagState,
    Result,
    build_graph,
    fmt,
    parse,
    run_threadswarm,
    shape_table,
    timed,
)

from swarm.agents.critic import CriticVerdict
from swarm.agents.roles import load_roles
from swarm.agents.worker import StepBrief
from swarm.prompts import render

THREADSWARM = "threadswarm sqlite, HTTP model"
CLIENTS = ("LangGraph + ChatOpenAI, HTTP model", "LangGraph + ChatLiteLLM, HTTP model")

Ask = Callable[[list[tuple[str, str]]], Awaitable[str]]


def chat_clients(kind: str, base: str) -> tuple[Ask, Ask]:
    """(worker, critic) calls through a LangChain chat model; the critic's is structured."""
    if kind == CLIENTS[0]:
        from langchain_openai import ChatOpenAI

        model: Any = ChatOpenAI(model=HTTP_MODEL.split("/", 1)[1], base_url=base,
                                timeout=60, max_retries=2)
    else:
        from langchain_litellm import ChatLiteLLM

        model = ChatLiteLLM(model=HTTP_MODEL, api_base=base, request_timeout=60, max_retries=2)
    judge = model.with_structured_output(CriticVerdict)

    async def worker(messages: list[tuple[str, str]]) -> str:
        return str((await model.ainvoke(messages)).content)

    async def critic(messages: list[tuple[str, str]]) -> str:
        verdict_: CriticVerdict = await judge.ainvoke(messages)
        return verdict_.critique

    return worker, critic


def step_messages(goal: str, key: str, latency_s: float,
                  inputs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str, str]:
    """The worker's messages as threadswarm builds them for a researcher step, and the critic's
    system prompt and brief pieces (the same text both runners send)."""
    roles = load_roles()
    brief = StepBrief(goal=goal, title=f"[latency:{latency_s * 500:g}] Step {key}",
                      instructions=f"Work on part {key} of the benchmark objective.",
                      inputs=inputs)
    worker = [("system", roles["researcher"].system_prompt), ("human", brief.prompt())]
    return worker, roles["critic"].system_prompt, brief.title


def http_node(worker: Ask, critic: Ask) -> Callable[[str, tuple[str, ...], float], Any]:
    def node(key: str, deps: tuple[str, ...], latency_s: float) -> Any:
        async def step(state: DagState) -> dict[str, Any]:
            inputs = [(d, state["outputs"][d]) for d in deps]
            messages, critic_system, title = step_messages(state["goal"], key, latency_s,
                                                           inputs)
            output = await worker(messages)
            await critic([("system", critic_system), ("human", render(
                "critic_user", goal=state["goal"], title=title,
                instructions=f"Work on part {key} of the benchmark objective.",
                output=output))])
            return {"outputs": {key: output}}

        return step

    return node


async def run_langgraph_http(kind: str, base: str, shape: Shape, n: int,
                             samples: list[Sample]) -> None:
    worker, critic = chat_clients(kind, base)
    node = http_node(worker, critic)
    graph = build_graph(shape, node).compile()
    warm = build_graph(shape.instant(), node).compile()
    config = {"recursion_limit": 10_000}
    await warm.ainvoke({"goal": "warm-up", "outputs": {}}, config)

    async def run() -> None:
        results = await asyncio.gather(*(
            graph.ainvoke({"goal": f"Benchmark objective {i}", "outputs": {}}, config)
            for i in range(n)))
        if any(len(r["outputs"]) != shape.size for r in results):
            raise RuntimeError("a LangGraph run did not complete every node")

    async def nothing() -> None:
        return None

    await timed(run, nothing, samples)


async def run_one(runner: str, base: str, shape: Shape, n: int, repeats: int) -> Result:
    result = Result(runner, shape, n)
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tsbench-") as tmp:
            try:
                if runner == THREADSWARM:
                    coro = run_threadswarm(shape, n, f"sqlite:///{Path(tmp) / 'ts.db'}",
                                           Path(tmp), result.samples, api_base=base)
                else:
                    coro = run_langgraph_http(runner, base, shape, n, result.samples)
                await asyncio.wait_for(coro, RUN_TIMEOUT_S)
            except Exception as exc:  # reported in the table; the other runs go on
                result.error = f"{type(exc).__name__}: {exc}"[:120]
                logging.getLogger(__name__).exception("run failed: %s %s", runner, shape.name)
                break
    return result


def cases(quick: bool) -> list[tuple[str, list[tuple[Shape, int]]]]:
    if quick:
        return [("layered 4x3, L=20 ms", [(layered(4, 3, 0.02), n) for n in (1, 10)]),
                ("80 ms step || chain of 4x20 ms", [(long_step_vs_chain(0.02), n)
                                                    for n in (1, 10)])]
    return [("layered 8x5, L=50 ms", [(layered(8, 5, 0.05), n) for n in (1, 10)]),
            ("200 ms step || chain of 4x50 ms, then a join",
             [(long_step_vs_chain(0.05), n) for n in (1, 10)]),
            ("L=1 s at 100 objectives", [(layered(8, 5, 1.0), 100),
                                         (long_step_vs_chain(1.0), 100)])]


def goals(results: list[Result]) -> str:
    rows = []
    ours = [r for r in results if r.runner == THREADSWARM and not r.error]
    for label, pick in (("every shape, 1 and 10 objectives", lambda r: r.objectives <= 10),
                        ("100 objectives, L=1 s", lambda r: r.objectives == 100)):
        for client in CLIENTS:
            pairs = [(r, next((x for x in results if x.runner == client and not x.error
                               and x.shape == r.shape and x.objectives == r.objectives), None))
                     for r in ours if pick(r)]
            pairs = [(r, lg) for r, lg in pairs if lg is not None]
            if not pairs:
                continue
            figure = "; ".join(f"{r.shape.name} x{r.objectives}: {fmt(r.ratio, 3)} vs "
                               f"{fmt(lg.ratio, 3)}" for r, lg in pairs if lg is not None)
            worst = max(r.ratio / lg.ratio for r, lg in pairs)
            outcome = "met" if worst < 1 else (
                f"**missed** on {sum(r.ratio >= lg.ratio for r, lg in pairs)} of {len(pairs)}: "
                f"up to {worst - 1:.0%} above LangGraph's")
            rows.append(goal(f"HTTP path, {label}: threadswarm's wall/bound below {client}'s",
                             figure, outcome))
    return "### Goals\n\n" + table(["goal", "threadswarm vs LangGraph (wall / bound)", "verdict"],
                                   rows)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("LiteLLM", "LiteLLM Router", "httpx", "aiosqlite", "openai"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = time.perf_counter()
    print("## The HTTP path: threadswarm and LangGraph on one OpenAI-compatible server\n")
    print(f"{machine()}. Two calls per step on every runner (worker, then a structured critic), "
          "each waiting L/2 on the server. 1-objective runs are the median of "
          f"{args.repeats}. wall / bound: 1.00 is the critical path; CPU = client process CPU "
          "(all threads) / steps; the server's CPU is not counted.\n")
    results: list[Result] = []
    with model_server() as base:
        for title, group in cases(args.quick):
            if args.only and args.only.lower() not in title.lower():
                continue
            group_results = []
            for shape, n in group:
                for runner in (THREADSWARM, *CLIENTS):
                    group_results.append(await run_one(runner, base, shape, n,
                                                       args.repeats if n == 1 else 1))
            results += group_results
            print(f"### {title}\n\n{shape_table(group_results)}\n", flush=True)
    print(goals(results) + "\n")
    print(f"_http_path bench took {time.perf_counter() - started:.0f} s_\n", flush=True)


if __name__ == "__main__":
    asyncio.run(main(parse(description=__doc__.splitlines()[0], postgres=False)))
