"""Scale-out: the same objectives with steps in-process, on 1 Celery worker and on 2.

The driver (planning, the engine, the outbox dispatcher with a console adapter writing nowhere)
runs in this process on PostgreSQL; with the Celery executor the step runs go through RabbitMQ
to `threadswarm worker` processes (--concurrency 4 each) started before the timing, warmed up by
one objective. The offline model answers at once (latency 0), so a step costs CPU only: litellm's
per-call work, the runner's transactions. Timing starts at the first plan approval and ends when
the last objective finished. CPU: this process's (time.process_time) and each worker's
(/proc/PID/stat utime + stime) over that window; "cores left" is the share of the machine's
cores these processes did not use (other processes on a shared machine may have used it).
Outbox lag is delivered_at - created_at of the run's outbox rows.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, fmt, machine, pg_answers, pg_schema, table
from rich.console import Console
from sqlalchemy import select

from bot.console.adapter import ConsoleAdapter
from bot.dispatcher import Dispatcher
from swarm.config import Settings
from swarm.engine.queue import CeleryExecutor, celery_app
from swarm.services.objectives import Swarm
from swarm.store import migrate
from swarm.store.db import Database
from swarm.store.models import Objective, OutboxEvent, Step, StepRun, ThreadRef

GOAL = "Launch a localized campaign for our SaaS"
BROKER = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    mode: str
    objectives: int
    steps: int
    runs: int
    wall_s: float
    cpu_s: dict[str, float]
    lag_s: list[float]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def approve_all(swarm: Swarm, ids: list[int]) -> None:
    """Approve plans and risky steps as they ask, until every objective rests."""
    while True:
        await swarm.join()
        pending = [a for oid in ids for a in swarm.pending_approvals(oid)]
        if not pending:
            return
        for approval in pending:
            await swarm.decide(approval.id, "bench", True)


async def objectives(swarm: Swarm, n: int, tag: str) -> list[int]:
    ids = []
    for i in range(n):
        thread = ThreadRef("console", "team-bench", "chan", f"{tag}-{i}")
        ids.append((await swarm.start_objective(f"{GOAL} {tag} {i}", thread, "bench",
                                                f"{tag}-{i}")).objective_id)
    await swarm.join()  # planned: each plan waits for its approval
    return ids


def start_workers(count: int, url: str, queue: str,
                  data_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DATABASE_URL=url, THREADSWARM_EXECUTOR="celery",
               CELERY_BROKER_URL=BROKER, THREADSWARM_CELERY_QUEUE=queue,
               THREADSWARM_OFFLINE_LATENCY_MS="0", THREADSWARM_MEMORY_ENABLED="false",
               THREADSWARM_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return [subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--concurrency", "4"],
                             env=env, cwd=data_dir, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(count)]


async def run_mode(workers: int | None, n: int, url: str, data_dir: Path) -> Run:
    """workers None: steps in this process; else that many `threadswarm worker` processes."""
    queue = f"threadswarm-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=data_dir, database_url=url, offline_latency_ms=0.0,
                        memory_enabled=False, max_concurrent_steps=10_000,
                        max_concurrent_steps_per_objective=64, grounding_after_steps=0,
                        celery_queue=queue)
    db = Database.connect(url)
    migrate.upgrade(db)
    app = celery_app(BROKER, queue) if workers else None
    swarm = Swarm(settings, db, executor=CeleryExecutor(app, db) if app else None)
    dispatcher = Dispatcher(db, [ConsoleAdapter(swarm, Console(file=io.StringIO()))])
    dispatcher.start()
    procs = start_workers(workers, url, queue, data_dir) if workers else []
    try:
        await approve_all(swarm, await objectives(swarm, 1, "warm"))  # and the workers are up
        ids = await objectives(swarm, n, "timed")
        cpu0 = {"driver": time.process_time(), **{f"worker {i + 1}": proc_cpu(p.pid)
                                                  for i, p in enumerate(procs)}}
        started = time.perf_counter()
        await approve_all(swarm, ids)
        wall = time.perf_counter() - started
        cpu = {"driver": time.process_time() - cpu0["driver"],
               **{f"worker {i + 1}": proc_cpu(p.pid) - cpu0[f"worker {i + 1}"]
                  for i, p in enumerate(procs)}}
        while dispatcher.has_pending():
            await dispatcher.drain()
            await asyncio.sleep(0.05)
        with db.read() as s:
            states = set(s.scalars(select(Objective.state).where(Objective.id.in_(ids))))
            if states != {"finished"}:
                raise RuntimeError(f"objectives ended {states}")
            steps = len(s.scalars(select(Step.id).where(Step.objective_id.in_(ids))).all())
            runs = len(s.scalars(select(StepRun.id).where(StepRun.objective_id.in_(ids))).all())
            lag = [(d - c).total_seconds() for c, d in s.execute(
                select(OutboxEvent.created_at, OutboxEvent.delivered_at)
                .where(OutboxEvent.objective_id.in_(ids)))]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        await dispatcher.stop()
        await swarm.shutdown()
        db.close()
        if app is not None:
            with app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
    mode = "in-process" if not workers else f"{workers} worker{'s' * (workers > 1)}"
    return Run(mode, n, steps, runs, wall, cpu, lag)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def report(runs: list[Run]) -> str:
    one = next((r for r in runs if r.mode == "1 worker"), None)
    cores = os.cpu_count() or 1
    rows = []
    for r in runs:
        per_s = r.runs / r.wall_s
        ratio = fmt(per_s / (one.runs / one.wall_s)) if one else "—"
        used = sum(r.cpu_s.values())
        rows.append([r.mode, fmt(r.objectives / r.wall_s * 60, 1), fmt(per_s, 1), ratio,
                     f"{pct(r.lag_s, 50) * 1000:.0f} / {pct(r.lag_s, 99) * 1000:.0f}",
                     ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_s.items()),
                     f"{max(0.0, 1 - used / (cores * r.wall_s)) * 100:.0f}%"])
    return table(["mode", "objectives / min", "step runs / s", "step runs ÷ 1 worker",
                  "outbox lag p50 / p99 ms", "CPU s per process", f"cores left by these ({cores})"],
                 rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 objectives instead of 40")
    parser.add_argument("--objectives", type=int)
    args = parser.parse_args()
    n = args.objectives or (8 if args.quick else 40)
    logging.basicConfig(level=logging.ERROR)
    if not pg_answers():
        print("PostgreSQL does not answer: the scale-out bench needs it.", file=sys.stderr)
        return
    runs = []
    for workers in (None, 1, 2):
        with pg_schema() as url, tempfile.TemporaryDirectory() as tmp:
            print(f"scale: {workers or 'in-process'} ...", file=sys.stderr)
            runs.append(await run_mode(workers, n, url, Path(tmp)))
    print(f"## Scale-out: steps in-process, on 1 and on 2 Celery workers\n\n{machine()}\n\n"
          f"{n} objectives of the offline plan (5 steps, 12 model calls, latency 0: CPU-bound), "
          f"PostgreSQL, RabbitMQ.\n")
    print(report(runs))


if __name__ == "__main__":
    asyncio.run(main())
