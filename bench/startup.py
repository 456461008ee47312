"""Start-up: time to ready and peak RSS of `threadswarm serve`, without and with the model.

Each target is a fresh subprocess on 127.0.0.1 only:
- `threadswarm serve` (Slack over HTTP, dummy credentials, SLACK_API_URL on a closed local
  port): ready when GET /healthz answers 200. Memory off (THREADSWARM_MEMORY_ENABLED=false),
  and memory on over a data dir where one team already has a memory, so that start-up opens
  its index and loads the embedding model (with an empty memory the model would load only at
  the first recall or remember).
- a stand-in without the Slack edge: `bot.runtime.Runtime(Settings(), memory=...)`, which with
  memory also forces the model with `Embedder.encode_sync(["x"])`; ready when it prints READY.
Ready = from spawning the process to the first answer; CPU = the process's user + system time
at that moment (a busy machine stretches wall time, much less CPU time); peak RSS = the
process's VmHWM (/proc/<pid>/status) read half a second after it is ready.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, fmt, goal, machine, median, off_by, table

READY_TIMEOUT_S = 120.0
SETTLE_S = 0.5
TEAM = "T-bench"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "serve" | "stand-in"
    memory: bool


TARGETS = [
    Target("threadswarm serve, memory off", "serve", False),
    Target("threadswarm serve, memory on (a team's index opens: the model loads)", "serve", True),
    Target("stand-in: Runtime, memory off", "stand-in", False),
    Target("stand-in: Runtime + Embedder.encode_sync(['x'])", "stand-in", True),
]


# -- the child side (the stand-in and the seeding of a team's memory) ---------------------------
async def child(mode: str) -> None:
    from bot.runtime import Runtime
    from swarm.config import Settings

    memory = mode in ("stand-in-memory", "seed")
    runtime = Runtime(Settings(), memory=memory)
    try:
        if mode == "seed":
            assert runtime.memory is not None
            await runtime.memory.remember(TEAM, "The launch budget is five million yen.",
                                          kind="decision")
            return
        if memory:
            assert runtime.memory is not None
            runtime.memory.embedder.encode_sync(["x"])
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    finally:
        await runtime.close()


# -- the parent side --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (less noisy than wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_env(data_dir: Path, memory: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"THREADSWARM_DATA_DIR": str(data_dir),
                "THREADSWARM_MEMORY_ENABLED": "true" if memory else "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"})
    env.pop("DATABASE_URL", None)
    env.pop("THREADSWARM_DATABASE_URL", None)
    return env


def serve_command(port: int, env: dict[str, str]) -> list[str]:
    """`threadswarm serve` as installed (the console script), else `python -m bot.cli serve`."""
    env.update({"PORT": str(port), "SLACK_SIGNING_SECRET": "bench-signing-secret",
                "SLACK_BOT_TOKEN": "xoxb-bench-dummy",
                "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/"})  # nobody listens
    for name in ("SLACK_APP_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        env.pop(name, None)
    script = Path(sys.executable).with_name("threadswarm")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    return head + ["serve", "--host", "127.0.0.1"]


def healthz(port: int) -> Callable[[subprocess.Popen[str]], bool]:
    url = f"http://127.0.0.1:{port}/healthz"

    def ready(_: subprocess.Popen[str]) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            time.sleep(0.02)
            return False

    return ready


def printed_ready(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout=0.05):
            return proc.stdout.readline().strip() == "READY"
    return False


@dataclass
class Launch:
    ready_s: float
    cpu_s: float
    peak_mb: float


def launch(command: list[str], env: dict[str, str],
           ready: Callable[[subprocess.Popen[str]], bool]) -> Launch:
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not ready(proc):
            if proc.poll() is not None:
                raise RuntimeError(f"exited {proc.returncode}: "
                                   f"{(proc.stderr.read() if proc.stderr else '')[-400:]}")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f} s")
        ready_s, used = time.perf_counter() - started, cpu_s(proc.pid)
        time.sleep(SETTLE_S)
        return Launch(ready_s, used, peak_rss_mb(proc.pid))
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)  # closes stdin too: the stand-in's cue to stop
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def seed(data_dir: Path) -> None:
    """A data dir where one team has a memory, so that start-up loads the model."""
    env = base_env(data_dir, True)
    subprocess.run([sys.executable, __file__, "--child", "seed"], env=env, cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=300)


def measure(target: Target, seeded: Path, repeats: int) -> list[Launch]:
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tsstart-") as tmp:
            data_dir = Path(tmp) / "data"
            if target.memory and target.kind == "serve":
                shutil.copytree(seeded, data_dir)
            env = base_env(data_dir, target.memory)
            if target.kind == "serve":
                port = free_port()
                out.append(launch(serve_command(port, env), env, healthz(port)))
            else:
                mode = "stand-in-memory" if target.memory else "stand-in"
                out.append(launch([sys.executable, __file__, "--child", mode], env,
                                  printed_ready))
    return out


def main(args: argparse.Namespace) -> None:
    repeats = 1 if args.quick else args.repeats
    has_serve = (ROOT / "bot" / "serve.py").exists()
    targets = [t for t in TARGETS if has_serve or t.kind != "serve"]
    print("## Start-up: time to ready and peak RSS\n")
    print(f"{machine()}. Median of {repeats} fresh process(es) per row (max for peak RSS); "
          "ready = spawn to first /healthz 200 (serve) or READY (stand-in).\n")
    rows, goal_rows = [], []
    with tempfile.TemporaryDirectory(prefix="tsseed-") as tmp:
        seeded = Path(tmp) / "data"
        if any(t.memory and t.kind == "serve" for t in targets):
            seed(seeded)
        for target in targets:
            try:
                runs = measure(target, seeded, repeats)
            except Exception as exc:
                rows.append([target.name, "error", str(exc)[:160], ""])
                continue
            ready = median([r.ready_s for r in runs])
            peak = max(r.peak_mb for r in runs)
            rows.append([target.name, fmt(ready, 2),
                         " / ".join(fmt(r.ready_s, 2) for r in runs),
                         fmt(median([r.cpu_s for r in runs]), 2), fmt(peak, 0)])
            if target.memory:
                goal_rows.append(goal(f"peak RSS < 600 MB with the model ({target.name})",
                                      f"{fmt(peak, 0)} MB", off_by(peak, 600)))
            else:
                goal_rows.append(goal(f"ready < 5 s without the model ({target.name})",
                                      f"{fmt(ready, 2)} s", off_by(ready, 5)))
    print(table(["process", "ready s (median)", "each run s", "CPU s to ready (median)",
                 "peak RSS MB"], rows) + "\n")
    if not has_serve:
        print("`bot/serve.py` is missing: only the stand-in was measured.\n")
    print("### Goals\n\n" + table(["goal", "figure", "verdict"], goal_rows) + "\n", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one process per row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["stand-in", "stand-in-memory", "seed"],
                        help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(child(arguments.child))
    else:
        main(arguments)
