"""Orchestration overhead: the same DAGs on threadswarm's engine and on LangGraph.

threadswarm runs each DAG through the product's own path: `Swarm(planner=...)`,
`start_objective`, the plan approval (`decide`), the eager engine, the step runner with
its database transactions and outbox rows, and two litellm calls per step (worker, then
critic) to the offline provider `offline/rehearsal`. A step of latency L carries the marker
`[latency:L/2]` in its title, which both prompts contain, so its worker call and its critic
call sleep L/2 each and the step costs L of model time.

LangGraph runs the same DAG as a `StateGraph` whose async node mirrors a step: two fake
model calls of `await asyncio.sleep(L/2)` each, outputs merged into the state. It runs
without a checkpointer and with `AsyncSqliteSaver` (durability "async", LangGraph's
default, and "sync", which like threadswarm persists each step before the next starts).

Timing for threadswarm starts at the plan approval (the moment a DAG becomes runnable, as
`ainvoke` does for LangGraph) and ends when the last objective is finished; the CPU figure
is the process CPU time (all threads) of that window plus a 50 ms idle tail, divided by the
number of steps. With PostgreSQL only the client's CPU is counted, not the server's.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

from common import (
    Sample,
    Shape,
    chain,
    fan_out,
    fmt,
    goal,
    layered,
    long_step_vs_chain,
    machine,
    median,
    ms,
    off_by,
    pg_answers,
    pg_schema,
    table,
    team_vs_flat,
)
from pydantic import BaseModel
from sqlalchemy import func, select

from swarm.agents.critic import CriticVerdict
from swarm.agents.planner import PlanSpec, StepSpec
from swarm.agents.roles import load_roles
from swarm.agents.tools import default_tools
from swarm.agents.worker import StepBrief
from swarm.config import Settings
from swarm.llm import offline
from swarm.llm.client import LLM, CallContext, Completion
from swarm.prompts import render
from swarm.services.objectives import Swarm
from swarm.store import migrate
from swarm.store.db import Database
from swarm.store.models import LLMCall, Objective, Step, ThreadRef

ROLES = ("researcher", "analyst", "writer", "security_reviewer")  # none of them risky
RUN_TIMEOUT_S = 900.0
HTTP_MODEL = "openai/gpt-4o-mini"
T = TypeVar("T", bound=BaseModel)
TAIL_S = 0.05


@dataclass
class Result:
    runner: str
    shape: Shape
    objectives: int
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def steps(self) -> int:
        return self.shape.size * self.objectives

    @property
    def wall_s(self) -> float:
        return median([s.wall_s for s in self.samples])

    @property
    def cpu_per_step_s(self) -> float:
        return median([s.cpu_s for s in self.samples]) / self.steps

    @property
    def ratio(self) -> float:
        """wall / critical-path bound; for L=0 shapes, per-step wall instead (seconds)."""
        if self.shape.bound_s > 0:
            return self.wall_s / self.shape.bound_s
        return self.wall_s / self.steps

    @property
    def overhead_per_step_s(self) -> float:
        """Wall above the bound, per step on the critical path."""
        return (self.wall_s - self.shape.bound_s) / self.shape.depth


async def timed(run: Callable[[], Awaitable[None]], start: Callable[[], Awaitable[None]],
                samples: list[Sample]) -> None:
    """Time `start` + `run`: wall until `run` returns, CPU until after a short idle tail."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    await start()
    await run()
    wall = time.perf_counter() - wall
    await asyncio.sleep(TAIL_S)  # background work the run left behind (litellm's logging)
    samples.append(Sample(wall, time.process_time() - cpu))


# -- threadswarm ----------------------------------------------------------------------------
def dag_planner(shape: Shape) -> Callable[[str, list[str], CallContext], Awaitable[PlanSpec]]:
    """A planner hook that returns the shape as a plan (the warm-up goal gets the same DAG with
    no latency, so that every statement the run needs is compiled before it is timed)."""
    teams: dict[str, PlanSpec] = {}  # a team's goal (its step's instructions) -> its plan

    def spec(shape: Shape, tag: str) -> PlanSpec:
        for n in shape.nodes:
            if n.team is not None:
                teams[f"{tag} team {n.key} of the benchmark objective."] = spec(n.team, tag)
        return PlanSpec(rationale=f"benchmark: {shape.name}", steps=[
            StepSpec(key=n.key, title=f"[latency:{n.latency_s * 500:g}] Step {n.key}",
                     role=ROLES[i % len(ROLES)], depends_on=list(n.deps), team=bool(n.team),
                     instructions=f"{tag} team {n.key} of the benchmark objective." if n.team
                     else f"Work on part {n.key} of the benchmark objective.")
            for i, n in enumerate(shape.nodes)])

    plan, warm = spec(shape, "run"), spec(shape.instant(), "warm-up")

    async def planner(goal: str, memories: list[str], ctx: CallContext) -> PlanSpec:
        if goal in teams:
            return teams[goal]
        return warm if goal.startswith("warm-up") else plan

    return planner


class TrivialLLM(LLM):
    """Model calls that cost nothing (one LLMCall row each, as a real call books): what is
    left is the engine, the step runner and the database writes."""

    def _trivial_call(self, tier: str, ctx: CallContext) -> None:
        rows = [LLMCall(objective_id=ctx.objective_id, step_id=ctx.step_id, run_id=ctx.run_id,
                        team_id=ctx.team_id, tier=tier, model="trivial", prompt_tokens=10,
                        completion_tokens=5, cached_tokens=0, cost=0.0, latency_ms=0.0,
                        ok=True)]
        ctx.calls.extend(rows)
        if self.book is not None:  # booked as the real layer books a returned call
            self.book.submit(rows, None)

    async def complete(self, tier: str, messages: list[dict[str, Any]], ctx: CallContext, *,
                       tools: list[dict[str, Any]] | None = None,
                       response_format: type[BaseModel] | None = None) -> Completion:
        self._trivial_call(tier, ctx)
        return Completion(content="## Output\nDone.")

    async def structured(self, tier: str, messages: list[dict[str, Any]], schema: type[T],
                         ctx: CallContext, **_: Any) -> T:
        self._trivial_call(tier, ctx)
        return schema.model_validate_json('{"approved": true, "critique": "Fine."}')


class SleepLLM(TrivialLLM):
    """LangGraph's fake model, given to threadswarm: each call awaits the `[latency:N]` of its
    prompt on the loop and returns at once. Run beside the product path, it shows the engine's
    own overhead with the model calls costing what they cost LangGraph."""

    @staticmethod
    async def _sleep(messages: list[dict[str, Any]]) -> None:
        await asyncio.sleep(offline.marked_latency(messages) or 0.0)

    async def complete(self, tier: str, messages: list[dict[str, Any]], ctx: CallContext, *,
                       tools: list[dict[str, Any]] | None = None,
                       response_format: type[BaseModel] | None = None) -> Completion:
        await self._sleep(messages)
        return await super().complete(tier, messages, ctx, tools=tools,
                                      response_format=response_format)

    async def structured(self, tier: str, messages: list[dict[str, Any]], schema: type[T],
                         ctx: CallContext, **kw: Any) -> T:
        await self._sleep(messages)
        return await super().structured(tier, messages, schema, ctx, **kw)


MODELS: dict[str, type[LLM] | None] = {"litellm": None, "sleep": SleepLLM, "trivial": TrivialLLM}


def settings_for(url: str, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=url, offline_latency_ms=0.0,
                    memory_enabled=False, max_concurrent_steps=10_000,
                    max_concurrent_steps_per_objective=64)


async def _objectives(swarm: Swarm, goal: str, n: int, tag: str) -> list[int]:
    ids = []
    for i in range(n):
        thread = ThreadRef("bench", "team-bench", "chan", f"{tag}-{i}")
        ids.append((await swarm.start_objective(f"{goal} {i}", thread, "bench",
                                                f"{tag}-{i}")).objective_id)
    await swarm.join()  # plans proposed, waiting for approval
    return ids


async def _approve(swarm: Swarm, ids: list[int]) -> None:
    for oid in ids:
        [approval] = swarm.pending_approvals(oid)
        assert (await swarm.decide(approval.id, "bench", True)).ok


def _check(swarm: Swarm, ids: list[int], steps: int) -> None:
    with swarm.db.read() as s:
        states = set(s.scalars(select(Objective.state).where(Objective.id.in_(ids))))
        done = s.scalar(select(func.count()).select_from(Step).where(
            Step.objective_id.in_(ids), Step.state == "finished"))
    if states != {"finished"} or done != steps:
        raise RuntimeError(f"objectives ended {states}, {done} of {steps} steps finished")


async def run_threadswarm(shape: Shape, n: int, url: str, data_dir: Path, samples: list[Sample],
                          model: str = "litellm", api_base: str | None = None) -> None:
    """`api_base`: the model is HTTP_MODEL at that OpenAI-compatible URL, not offline."""
    settings = settings_for(url, data_dir)
    if api_base is not None:
        settings = settings.model_copy(update={"model": HTTP_MODEL,
                                               "model_api_bases": {HTTP_MODEL: api_base}})
    db = Database.connect(url)
    migrate.upgrade(db)
    fake = MODELS[model]
    swarm = Swarm(settings, db, planner=dag_planner(shape),
                  llm=fake(settings) if fake is not None else None)
    try:
        warm = await _objectives(swarm, "warm-up", 1, "warm")
        await _approve(swarm, warm)
        await swarm.join()
        ids = await _objectives(swarm, "Benchmark objective", n, "run")

        async def approve() -> None:
            await _approve(swarm, ids)

        await timed(swarm.join, approve, samples)
        _check(swarm, ids, len(shape.nodes) * n)
    finally:
        await swarm.shutdown()
        close_llm(swarm.llm)
        db.close()


def close_llm(llm: LLM) -> None:
    """Unhook the LLM's Router from litellm's global callbacks (Swarm.shutdown does not):
    left hooked, every later run in this process would pay for them on each call."""
    close = getattr(llm, "close", None)
    if close is not None:
        close()


# -- LangGraph ------------------------------------------------------------------------------
def _merge(left: dict[str, str], right: dict[str, str]) -> dict[str, str]:
    return {**left, **right}


class DagState(TypedDict):
    goal: str
    outputs: Annotated[dict[str, str], _merge]


async def fake_model(prompt: str, latency_s: float) -> str:
    """LangGraph's stand-in for a model call: a fixed latency, awaited on the loop."""
    await asyncio.sleep(latency_s)
    return f"Answer ({len(prompt)} characters of prompt)."


def _node(key: str, deps: tuple[str, ...], latency_s: float) -> Callable[..., Any]:
    async def step(state: DagState) -> dict[str, Any]:
        inputs = "\n".join(f"- {d}: {state['outputs'][d]}" for d in deps)
        output = await fake_model(f"{state['goal']}\nSTEP: {key}\n{inputs}", latency_s / 2)
        await fake_model(f"{state['goal']}\nREVIEW: {output}", latency_s / 2)  # the critic
        return {"outputs": {key: output}}

    return step


def build_graph(shape: Shape, node: Callable[[str, tuple[str, ...], float], Any] = _node) -> Any:
    """The shape as a StateGraph: `node(key, deps, latency_s)` makes each step's function."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(DagState)
    used: set[str] = set()
    for n in shape.nodes:
        graph.add_node(n.key, node(n.key, n.deps, n.latency_s))
        if not n.deps:
            graph.add_edge(START, n.key)
        else:  # a list of sources waits for all of them
            graph.add_edge(list(n.deps) if len(n.deps) > 1 else n.deps[0], n.key)
        used.update(n.deps)
    for n in shape.nodes:
        if n.key not in used:
            graph.add_edge(n.key, END)
    return graph


async def run_langgraph(shape: Shape, n: int, checkpointer: str, data_dir: Path,
                        samples: list[Sample]) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    graph = build_graph(shape)
    warm_graph = build_graph(shape.instant())

    async def go(saver: Any, durability: str | None) -> None:
        compiled, warm = graph.compile(checkpointer=saver), warm_graph.compile(checkpointer=saver)
        extra = {"durability": durability} if durability else {}

        def config(tag: str) -> dict[str, Any]:
            return {"configurable": {"thread_id": tag}, "recursion_limit": 10_000}

        await warm.ainvoke({"goal": "warm-up", "outputs": {}}, config("warm"), **extra)

        async def run() -> None:
            results = await asyncio.gather(*(
                compiled.ainvoke({"goal": f"Benchmark objective {i}", "outputs": {}},
                                 config(f"run-{i}"), **extra) for i in range(n)))
            if any(len(r["outputs"]) != shape.size for r in results):
                raise RuntimeError("a LangGraph run did not complete every node")

        async def nothing() -> None:
            return None

        await timed(run, nothing, samples)

    if checkpointer == "none":
        await go(None, None)
    else:
        async with AsyncSqliteSaver.from_conn_string(str(data_dir / "langgraph.db")) as saver:
            await go(saver, checkpointer)


# -- the runs -------------------------------------------------------------------------------
RUNNERS = {
    "threadswarm sqlite": "ts-sqlite",
    "threadswarm postgresql": "ts-pg",
    "threadswarm sqlite, LangGraph's fake model": "ts-sqlite-sleep",
    "LangGraph, no checkpointer": "lg-none",
    "LangGraph + AsyncSqliteSaver (async)": "lg-async",
    "LangGraph + AsyncSqliteSaver (sync)": "lg-sync",
}


async def run_one(runner: str, shape: Shape, n: int, repeats: int,
                  model: str = "litellm") -> Result:
    result = Result(runner, shape, n)
    kind = RUNNERS.get(runner, runner)
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tsbench-") as tmp:
            data_dir = Path(tmp)
            try:
                if kind.startswith("ts-sqlite"):
                    coro = run_threadswarm(shape, n, f"sqlite:///{data_dir / 'ts.db'}", data_dir,
                                           result.samples,
                                           "sleep" if kind.endswith("-sleep") else model)
                    await asyncio.wait_for(coro, RUN_TIMEOUT_S)
                elif kind == "ts-pg":
                    with pg_schema() as url:
                        await asyncio.wait_for(run_threadswarm(shape, n, url, data_dir,
                                                               result.samples, model),
                                               RUN_TIMEOUT_S)
                else:
                    await asyncio.wait_for(run_langgraph(shape, n, kind.split("-")[1], data_dir,
                                                         result.samples), RUN_TIMEOUT_S)
            except Exception as exc:  # report it in the table, keep benchmarking the rest
                result.error = f"{type(exc).__name__}: {exc}"[:120]
                logging.getLogger(__name__).exception("run failed: %s %s", runner, shape.name)
                break
    return result


@dataclass(frozen=True)
class Case:
    shape: Shape
    objectives: int
    note: str = ""
    threadswarm_only: bool = False  # a team of its own: no LangGraph twin is built for it


def cases(quick: bool) -> list[tuple[str, list[Case]]]:
    ms50, second = 0.050, 1.0
    teams = [Case(shape, n, threadswarm_only=True) for n in (1, 10)
             for shape in team_vs_flat(0.02 if quick else ms50)]
    team_title = (f"a team of its own vs the same steps flat, L={20 if quick else 50} ms "
                  "(threadswarm only)")
    if quick:
        return [(team_title, teams),
            ("layered 4x3, L=20 ms", [Case(layered(4, 3, 0.02), n) for n in (1, 10)]),
            ("80 ms step || chain of 4x20 ms, then a join", [
                Case(long_step_vs_chain(0.02), n) for n in (1, 10)]),
            ("chain of 20, L=0", [Case(chain(20), n) for n in (1, 10)]),
            ("fan-out 10 then a join, L=0", [Case(fan_out(10), n) for n in (1, 10)]),
        ]
    return [
        ("layered 8x5, L=50 ms", [Case(layered(8, 5, ms50), n) for n in (1, 10, 100)]),
        ("200 ms step || chain of 4x50 ms, then a join", [
            Case(long_step_vs_chain(ms50), n) for n in (1, 10, 100)]),
        ("chain of 200, L=0", [
            Case(chain(200), 1), Case(chain(200), 10),
            Case(chain(10), 100, "reduced to a chain of 10 at 100 objectives")]),
        ("fan-out 50 then a join, L=0", [
            Case(fan_out(50), 1), Case(fan_out(50), 10),
            Case(fan_out(10), 100, "reduced to a fan-out of 10 at 100 objectives")]),
        ("L=1 s at 100 objectives", [
            Case(layered(8, 5, second), 100),
            Case(long_step_vs_chain(second), 100)]),
        (team_title, teams),
    ]


def shape_table(results: list[Result]) -> str:
    rows = []
    base = {(r.shape.name, r.objectives): r for r in results
            if r.runner == "LangGraph, no checkpointer" and not r.error}
    for r in results:
        if r.error:
            rows.append([r.objectives, r.runner, r.shape.name, "error", r.error, "", "", ""])
            continue
        zero = r.shape.bound_s == 0
        lg = base.get((r.shape.name, r.objectives))
        rows.append([
            r.objectives, r.runner, f"{r.shape.name} ({r.steps} steps)",
            ms(r.wall_s, 0),
            f"{ms(r.ratio, 2)} ms/step" if zero else fmt(r.ratio, 3),
            "" if zero else ms(r.overhead_per_step_s, 2),
            ms(r.cpu_per_step_s, 3),
            fmt(r.wall_s / lg.wall_s, 2) if lg else "",
        ])
    headers = ["objectives", "runner", "DAG", "wall ms", "wall / bound (L=0: wall per step)",
               "overhead ms / critical-path step", "CPU ms / step", "wall ÷ LangGraph none"]
    return table(headers, rows)


# -- the CPU split ----------------------------------------------------------------------------
def team_overhead(results: list[Result]) -> str:
    """The cost of a team of its own, measured side by side with the same steps flat: same
    critical path, same step count; what is left is the team's planning, its delegation and
    its summary's second claim."""
    flat = {(r.runner, r.objectives): r for r in results
            if not r.error and not any(n.team for n in r.shape.nodes)}
    rows = [[r.objectives, r.runner, fmt(r.ratio, 3), fmt(flat[key].ratio, 3),
             fmt(r.wall_s / flat[key].wall_s, 2),
             ms((r.wall_s - flat[key].wall_s) / r.objectives, 1)]
            for r in results if not r.error and any(n.team for n in r.shape.nodes)
            and (key := (r.runner, r.objectives)) in flat]
    return table(["objectives", "runner", "team: wall / bound", "flat: wall / bound",
                  "team ÷ flat wall", "extra ms per objective"], rows)


def _step_messages() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    roles = load_roles()
    brief = StepBrief(goal="Benchmark objective 0", title="[latency:0] Step s1",
                      instructions="Work on part s1 of the benchmark objective.",
                      inputs=[("[latency:0] Step s0", "## Step s0\nFor: Benchmark objective.")])
    worker = [{"role": "system", "content": roles["researcher"].system_prompt},
              {"role": "user", "content": brief.prompt()}]
    critic = [{"role": "system", "content": roles["critic"].system_prompt},
              {"role": "user", "content": render("critic_user", goal=brief.goal,
                                                 title=brief.title,
                                                 instructions=brief.instructions,
                                                 output="## Step s1\nFor: Benchmark.")}]
    return worker, critic, default_tools().schemas(roles["researcher"].tools)


async def litellm_cpu(steps: int) -> tuple[Sample, float, Sample, float]:
    """Per step (a worker call with tools + a critic call with response_format), L=0: process
    CPU and main-thread CPU of bare `litellm.acompletion`, then of swarm's LLM layer."""
    import litellm

    settings = settings_for("sqlite://", Path(tempfile.gettempdir()))
    llm = LLM(settings)
    worker, critic, tools = _step_messages()
    model = settings.model

    async def bare() -> None:
        await litellm.acompletion(model=model, messages=worker, tools=tools, timeout=60)
        await litellm.acompletion(model=model, messages=critic, response_format=CriticVerdict,
                                  timeout=60)

    async def layer() -> None:
        ctx = CallContext()
        await llm.complete("worker", worker, ctx, tools=tools)
        await llm.structured("fast", critic, CriticVerdict, ctx)

    out: list[Any] = []
    for call in (bare, layer):
        for _ in range(20):
            await call()  # warm
        samples: list[Sample] = []
        main_thread = time.thread_time()

        async def loop(call: Callable[[], Awaitable[None]] = call) -> None:
            for _ in range(steps):
                await call()

        async def nothing() -> None:
            return None

        await timed(loop, nothing, samples)
        out += [samples[0], (time.thread_time() - main_thread) / steps]
    close_llm(llm)
    return out[0], out[1], out[2], out[3]


async def cpu_split(quick: bool, use_pg: bool, full_chain: Result | None) -> tuple[str, float]:
    steps = 200 if quick else 1000
    bare, bare_main, layer, layer_main = await litellm_cpu(steps)
    rows = [
        ["litellm.acompletion alone (worker call with tools + critic call with "
         "response_format), offline provider, L=0", ms(bare.cpu_s / steps, 3),
         ms(bare_main, 3), f"{steps} steps"],
        ["swarm.llm.client layer (LLM.complete + LLM.structured: litellm + cost + LLMCall rows)",
         ms(layer.cpu_s / steps, 3), ms(layer_main, 3), f"{steps} steps"],
    ]
    engine_cpu = float("nan")
    shapes = [chain(20 if quick else 200), fan_out(10 if quick else 50)]
    runners = ["threadswarm sqlite"] + (["threadswarm postgresql"] if use_pg else [])
    for runner in runners:
        for shape in shapes:
            for n in (1, 10):
                r = await run_one(runner, shape, n, 1, model="trivial")
                if r.error:
                    rows.append([f"engine + DB, trivial model: {runner}, {shape.name}, {n} obj.",
                                 "error", "", r.error])
                    continue
                if runner == "threadswarm sqlite" and shape.name.startswith("chain") and n == 1:
                    engine_cpu = r.cpu_per_step_s
                rows.append([f"engine + DB writes + outbox, trivial model: {runner}, "
                             f"{shape.name}, {n} objective(s)", ms(r.cpu_per_step_s, 3), "",
                             f"wall {ms(r.wall_s / r.steps, 3)} ms/step"])
    if full_chain is not None and not full_chain.error:
        rows.append([f"full product path ({full_chain.runner}, {full_chain.shape.name}, "
                     f"{full_chain.objectives} objective)", ms(full_chain.cpu_per_step_s, 3), "",
                     "from the table above"])
    headers = ["component", "CPU ms / step (all threads)", "of which the event-loop thread",
               "note"]
    return table(headers, rows), engine_cpu


# -- main --------------------------------------------------------------------------------------
def goals(results: list[Result], engine_cpu: float, quick: bool) -> str:
    """The issue's goals, once per threadswarm runner: the product path (litellm's offline
    provider) and the same engine with LangGraph's fake model (model calls cost nothing)."""
    rows: list[list[str]] = []

    def label(r: Result) -> str:
        return f"{r.shape.name}, L={ms(r.shape.unit_s, 0)} ms, x{r.objectives}"

    def ratios(runs: list[Result]) -> str:
        return "; ".join(f"{label(r)}: {fmt(r.ratio, 3)}" for r in runs)

    for runner in (n for n in RUNNERS if n.startswith("threadswarm")):
        runs = [r for r in results if r.runner == runner and not r.error]
        if not runs:
            continue
        l50 = [r for r in runs if r.objectives == 1 and 0 < r.shape.unit_s <= 0.05]
        if l50:
            rows.append(goal(f"fake model ({runner}): 1 objective, "
                             f"L={ms(l50[0].shape.unit_s, 0)} ms, wall/bound <= 1.05, every shape",
                             ratios(l50), off_by(max(r.ratio for r in l50), 1.05)))
        l1 = [r for r in runs if r.objectives == 100 and r.shape.unit_s >= 1]
        if l1:
            rows.append(goal(f"fake model ({runner}): 100 objectives, L=1 s, wall/bound <= 1.10",
                             ratios(l1), off_by(max(r.ratio for r in l1), 1.10)))
        for lg_runner in (n for n in RUNNERS if n.startswith("LangGraph")):
            won, lost = 0, []
            for r in runs:
                lg = next((x for x in results if x.runner == lg_runner and not x.error
                           and x.objectives == r.objectives and x.shape == r.shape), None)
                if lg is None:
                    continue
                if r.ratio < lg.ratio:
                    won += 1
                else:
                    lost.append(label(r))
            if won or lost:
                rows.append(goal(f"fake model ({runner}): wall/bound below {lg_runner}'s on "
                                 "every shape and concurrency (L=0: wall per step)",
                                 f"{won} of {won + len(lost)} won" + (
                                     "" if not lost else " (lost every one)" if not won
                                     else "; lost: " + "; ".join(lost)),
                                 "met" if not lost else f"**missed** on {len(lost)}"))
    rows.append(goal("engine CPU per step <= 1 ms on SQLite, every database write and outbox "
                     "row included (threadswarm sqlite, trivial model, chain)",
                     f"{ms(engine_cpu, 3)} ms", off_by(engine_cpu * 1000, 1.0)))
    for r in (r for r in results if r.runner == "threadswarm sqlite" and not r.error
              and r.shape.bound_s == 0 and r.objectives == 1):
        rows.append(["(for comparison) CPU per step of threadswarm sqlite with the two litellm "
                     "calls", f"{r.shape.name}: {ms(r.cpu_per_step_s, 3)} ms",
                     "see the CPU split"])
    note = " (quick run: smaller shapes, L=20 ms; not the goals' settings)" if quick else ""
    return "### Goals" + note + "\n\n" + table(["goal", "figure", "verdict"], rows)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("LiteLLM", "LiteLLM Router", "httpx", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    use_pg = not args.no_pg and not args.quick and pg_answers()
    runners = ["threadswarm sqlite"] + (["threadswarm postgresql"] if use_pg else []) + [
        "threadswarm sqlite, LangGraph's fake model", "LangGraph, no checkpointer",
        "LangGraph + AsyncSqliteSaver (async)", "LangGraph + AsyncSqliteSaver (sync)"]
    started = time.perf_counter()
    print("## Orchestration: threadswarm's engine vs LangGraph\n")
    print(f"{machine()}. Each threadswarm step makes two model calls (worker, critic) of L/2 "
          "each through litellm's offline provider; each LangGraph node two "
          "`asyncio.sleep(L/2)` calls. bound = critical path; overhead = (wall - bound) / "
          "steps on the critical path; CPU = process CPU (all threads) / steps. "
          "1-objective runs are the median of "
          f"{args.repeats}. PostgreSQL: {'yes' if use_pg else 'no (not answering or skipped)'}."
          "\n")
    results: list[Result] = []
    for title, group in cases(args.quick):
        if args.only and args.only.lower() not in title.lower():
            continue
        group_results: list[Result] = []
        for case in group:
            for runner in runners:
                if case.threadswarm_only and not runner.startswith("threadswarm"):
                    continue
                repeats = args.repeats if case.objectives == 1 else 1
                group_results.append(await run_one(runner, case.shape, case.objectives, repeats))
        results += group_results
        bound = ", ".join(sorted({f"{c.shape.name}: bound {ms(c.shape.bound_s, 0)} ms, "
                                  f"{c.shape.depth} steps on the critical path" for c in group}))
        notes = "".join(f" Note: {c.note}." for c in group if c.note)
        print(f"### {title}\n\n{bound}.{notes}\n\n{shape_table(group_results)}\n", flush=True)
        if any(c.threadswarm_only for c in group):
            print(team_overhead(group_results) + "\n", flush=True)
    chain_full = next((r for r in results if r.runner == "threadswarm sqlite"
                       and r.shape.name.startswith("chain") and r.objectives == 1), None)
    split, engine_cpu = await cpu_split(args.quick, use_pg, chain_full)
    print("### CPU per step: litellm vs engine + database\n")
    print("The model calls cost the same CPU whatever the engine; the engine + DB rows run the "
          "real Swarm, engine, step runner, transactions and outbox rows with a model call that "
          "returns at once (TrivialLLM).\n")
    print(split + "\n")
    print(goals(results, engine_cpu, args.quick) + "\n")
    print(f"_orchestration bench took {time.perf_counter() - started:.0f} s_\n", flush=True)


def parse(argv: list[str] | None = None, description: str = __doc__.splitlines()[0],
          postgres: bool = True) -> argparse.Namespace:
    """The runs' options (http_path.py shares them, without PostgreSQL)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    if postgres:
        parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of 1-objective runs")
    parser.add_argument("--only", help="run only the shape groups whose title contains this")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
