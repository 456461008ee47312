"""Run every benchmark (each in its own process) and print their Markdown, one after another.

`make bench` runs this. `--quick` is passed on to the scripts that take it. At the end, one
table gathers every goal the scripts measured (issue 17's), each with its figure and verdict.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import read_goals, table  # noqa: E402

SCRIPTS = ["orchestration.py", "http_path.py", "llm_cpu.py", "startup.py", "memory.py", "ack.py",
           "drift.py"]


def run(script: Path, quick: bool) -> tuple[str, int]:
    """The script's stdout (Markdown) and exit code; its stderr goes straight to ours."""
    command = [sys.executable, str(script)]
    if quick and "--quick" in script.read_text():
        command.append("--quick")
    done = subprocess.run(command, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
    return done.stdout, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run of each")
    args = parser.parse_args()
    print(f"# threadswarm benchmarks{' (quick)' if args.quick else ''}\n")
    print(f"_{time.strftime('%Y-%m-%d %H:%M:%S')}; machines are noisy: compare the ratios "
          "within one run, not absolute times across runs._\n", flush=True)
    failed = []
    goals: list[list[str]] = []
    begun = time.perf_counter()
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            continue
        started = time.perf_counter()
        print(f"<!-- bench/{name} -->", flush=True)
        out, code = run(script, args.quick)
        print(out.rstrip() + "\n", flush=True)
        goals += [[f"{goal} (bench/{name})", figure, outcome]
                  for goal, figure, outcome in read_goals(out)]
        if code != 0:
            failed.append(name)
            print(f"**bench/{name} failed with exit code {code}** (its stderr is above).\n")
        print(f"_bench/{name}: {time.perf_counter() - started:.0f} s_\n", flush=True)
    print("## Every goal of the run\n")
    print(("_A quick run: smaller shapes and sizes than the goals name; a smoke test, not the "
           "verdicts._\n\n" if args.quick else "") + table(["goal", "figure", "verdict"], goals))
    missed = sum("missed" in outcome for _, _, outcome in goals)
    print(f"\n{len(goals)} goals, {missed} missed"
          + (f"; bench/{', bench/'.join(failed)} failed" if failed else "")
          + f". The whole run took {(time.perf_counter() - begun) / 60:.0f} min.\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
