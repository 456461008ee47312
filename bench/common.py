"""Shared helpers for the benchmarks: DAG shapes, timing, PostgreSQL schemas, Markdown."""
from __future__ import annotations

import json
import os
import statistics
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:  # `python bench/x.py` from anywhere, installed or not; first,
    sys.path.insert(0, str(ROOT))  # so that bench/memory.py never shadows the memory package

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_URL = os.environ.get("THREADSWARM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# -- DAG shapes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    key: str
    deps: tuple[str, ...]
    latency_s: float  # what one step costs in model time (worker + critic together)
    team: Shape | None = None  # done by a team of its own first; latency_s is its summary


@dataclass(frozen=True)
class Shape:
    name: str
    nodes: tuple[Node, ...]
    unit_s: float  # the L the shape was built with (for the tables)

    @property
    def size(self) -> int:
        """Steps in the whole tree: a team's own steps count, as they run."""
        return sum(1 + (n.team.size if n.team else 0) for n in self.nodes)

    def instant(self) -> Shape:
        """The same DAG with no model latency: a warm-up that takes every code path."""
        return Shape(self.name, tuple(Node(n.key, n.deps, 0.0, n.team and n.team.instant())
                                      for n in self.nodes), 0.0)

    def _longest(self) -> dict[str, tuple[float, int]]:
        """Per node: (latency, step count) of the longest path that ends with it; a team
        node's path runs through its team's critical path, then its summary."""
        best: dict[str, tuple[float, int]] = {}
        for n in self.nodes:  # nodes are listed in dependency order
            before = max((best[d] for d in n.deps), default=(0.0, 0))
            inner = (n.team.bound_s, n.team.depth) if n.team else (0.0, 0)
            best[n.key] = (before[0] + inner[0] + n.latency_s, before[1] + inner[1] + 1)
        return best

    @property
    def bound_s(self) -> float:
        """The critical-path bound: no scheduler can finish sooner."""
        return max(t for t, _ in self._longest().values())

    @property
    def depth(self) -> int:
        """Steps on the critical path (the longest by steps when every latency is 0)."""
        paths = self._longest().values()
        if self.bound_s > 0:
            return max(paths)[1]
        return max(n for _, n in paths)


def layered(layers: int, width: int, latency_s: float) -> Shape:
    nodes: list[Node] = []
    prev: tuple[str, ...] = ()
    for i in range(layers):
        keys = tuple(f"l{i}n{j}" for j in range(width))
        nodes += [Node(k, prev, latency_s) for k in keys]
        prev = keys
    return Shape(f"layered {layers}x{width}", tuple(nodes), latency_s)


def long_step_vs_chain(latency_s: float, chain: int = 4, long_factor: int = 4) -> Shape:
    """One step of long_factor*L parallel to a chain of `chain` steps of L, then a join of L."""
    nodes = [Node("long", (), long_factor * latency_s)]
    prev: tuple[str, ...] = ()
    for i in range(chain):
        nodes.append(Node(f"c{i}", prev, latency_s))
        prev = (f"c{i}",)
    nodes.append(Node("join", ("long", f"c{chain - 1}"), latency_s))
    return Shape(f"{long_factor}L || chain {chain}xL, join", tuple(nodes), latency_s)


def team_vs_flat(latency_s: float) -> tuple[Shape, Shape]:
    """Three parallel steps, then a team of its own (layered 2x3) and its summary, then a join;
    and the same steps flat, the team's inlined: one critical path (5 L), one step count (11)."""
    first = [Node(f"a{i}", (), latency_s) for i in range(3)]
    heads = tuple(n.key for n in first)
    team = layered(2, 3, latency_s)
    with_team = Shape("3 || a team (layered 2x3) + summary, join", tuple(
        [*first, Node("team", heads, latency_s, team), Node("join", ("team",), latency_s)]),
        latency_s)
    inner = [Node(f"t{n.key}", tuple(f"t{d}" for d in n.deps) or heads, n.latency_s)
             for n in team.nodes]
    last = tuple(n.key for n in inner[-3:])
    flat = Shape("the same 11 steps flat", tuple(
        [*first, *inner, Node("sum", last, latency_s), Node("join", ("sum",), latency_s)]),
        latency_s)
    return with_team, flat


def chain(length: int, latency_s: float = 0.0) -> Shape:
    nodes = [Node(f"s{i}", (f"s{i - 1}",) if i else (), latency_s) for i in range(length)]
    return Shape(f"chain {length}", tuple(nodes), latency_s)


def fan_out(width: int, latency_s: float = 0.0) -> Shape:
    nodes = [Node(f"f{i}", (), latency_s) for i in range(width)]
    nodes.append(Node("join", tuple(n.key for n in nodes), latency_s))
    return Shape(f"fan-out {width}, join", tuple(nodes), latency_s)


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class Sample:
    wall_s: float
    cpu_s: float


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- PostgreSQL -----------------------------------------------------------------------------------
def pg_answers(url: str = PG_URL) -> bool:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def pg_schema(url: str = PG_URL) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f"create schema {schema}"))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


# -- a model over HTTP ----------------------------------------------------------------------------
MODEL_SERVER = """
import asyncio
from tests.fakes.openai_server import FakeOpenAI
async def main():
    server = await FakeOpenAI(latency_marker=True).start()
    print(server.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@contextmanager
def model_server() -> Iterator[str]:
    """The tests' OpenAI-compatible server (`[latency:N]` in a prompt: answered after N ms) in
    a process of its own, so a client's CPU is measured without the server's; yields its
    base URL (".../v1")."""
    import subprocess

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-secret")
    proc = subprocess.Popen([sys.executable, "-c", MODEL_SERVER], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{proc.stdout.readline().strip()}/v1"
    finally:
        proc.kill()
        proc.wait()


# -- Markdown -------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(out)


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:.{digits}f}"


def ms(seconds: float, digits: int = 1) -> str:
    return fmt(seconds * 1000, digits)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
            f"load average {load:.2f} at start")


# -- the goals, gathered by run_all.py ---------------------------------------------------
GOAL_MARK = "<!-- goal "


def off_by(value: float, limit: float, *, below: bool = True) -> str:
    """'met', or how far the figure is from its limit: 'missed by 0.094 (9% over 1.05)'."""
    if value != value:  # NaN: nothing measured
        return "n/a"
    if (value <= limit) if below else (value >= limit):
        return "met"
    gap = value - limit
    side = "over" if gap > 0 else "under"
    return f"**missed** by {abs(gap):.3g} ({abs(gap) / limit:.0%} {side} {limit:g})"


def goal(name: str, figure: str, outcome: str) -> list[str]:
    """A goals-table row; also printed as a Markdown comment that run_all.py collects into one
    table of every goal of the run (invisible where the Markdown is rendered)."""
    print(GOAL_MARK + json.dumps([name, figure, outcome]) + " -->")
    return [name, figure, outcome]


def read_goals(markdown: str) -> list[list[str]]:
    return [json.loads(line[len(GOAL_MARK):-len(" -->")]) for line in markdown.splitlines()
            if line.startswith(GOAL_MARK) and line.endswith(" -->")]
