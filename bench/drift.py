"""Drift detection of the grounding check with the configured model, on the labelled set.

Runs the embedding pre-filter (the team memory's all-MiniLM-L6-v2), the judge
(THREADSWARM_FAST_MODEL, or THREADSWARM_MODEL; offline by default) and the whole check
(pre-filter, then the judge where it passed) over tests/data/drift_cases.yaml, and prints
detection per drift kind and false alarms on the on-track cases, so a team measures its own
model: `THREADSWARM_FAST_MODEL=gpt-4o-mini python bench/drift.py`.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

# Run as `python bench/drift.py`, this folder comes first on sys.path and bench/memory.py would
# shadow the `memory` package: the repository root goes there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from memory import Embedder  # noqa: E402
from schedules import drift_set  # noqa: E402
from swarm.config import Settings  # noqa: E402
from swarm.llm.budget import Budget  # noqa: E402
from swarm.llm.client import LLM  # noqa: E402
from swarm.store import migrate  # noqa: E402
from swarm.store.db import Database  # noqa: E402

CASES = _HERE.parent / "tests" / "data" / "drift_cases.yaml"
SUBTLE = {"wrong_market", "wrong_audience", "scope_creep", "broken_constraint", "easier_goal"}


async def measure(cases_path: Path, concurrency: int, most: int | None = None) -> str:
    settings = Settings(memory_enabled=False)
    cases = drift_set.load(cases_path)
    if most is not None:  # a quick run: every kind, fewer cases of each
        kinds = sorted({c.kind for c in cases})
        cases = [c for i in range(most) for k in kinds
                 if len(of := [c for c in cases if c.kind == k]) > i for c in [of[i]]]
    flags = await drift_set.prefilter_flags(cases, Embedder(settings.embedding_model),
                                            settings.grounding_min_similarity)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.connect(f"sqlite:///{tmp}/bench.db")  # the judge's calls are booked here
        migrate.upgrade(db)
        llm = LLM(settings, Budget(settings, db))
        try:
            await drift_set.add_judge(flags, llm, concurrency)
        finally:
            llm.close()
            db.close()
    threshold, caught, alarms = drift_set.best_threshold(flags, SUBTLE, 0.10)
    return "\n".join([
        f"## Drift detection ({len(cases)} cases; judge: {settings.model_for('fast')}; "
        f"pre-filter below similarity {settings.grounding_min_similarity})", "",
        "Detected / cases per drift kind; on_track counts false alarms.", "", "```",
        drift_set.table(flags), "```", "",
        f"Similarity alone on subtle drift, at its best within 10% false alarms: {caught:.0%} "
        f"caught ({alarms:.0%} false alarms, threshold {threshold:.3f})."])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--concurrency", type=int, default=4, help="judge calls at once")
    parser.add_argument("--quick", action="store_true", help="three cases of each kind")
    args = parser.parse_args()
    print(asyncio.run(measure(args.cases, args.concurrency, 3 if args.quick else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
