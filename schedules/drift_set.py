"""Measuring drift detection on a labelled set of (goal, constraints, plan, outputs) cases:
each signal (the embedding pre-filter, the judge, and the whole check: pre-filter then judge)
as detection per drift kind and false alarms on the on-track cases. Used by the tests
(tests/data/drift_cases.yaml) and by bench/drift.py with whatever model is configured."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schedules.prefilter import Output, off_topic, similarities
from swarm.agents.grounding import Constraints, judge
from swarm.llm.client import LLM, CallContext, LLMError

ON_TRACK = "on_track"
SIGNALS = ("prefilter", "judge", "check")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    goal: str
    constraints: Constraints
    plan: list[str]
    outputs: list[Output]

    @property
    def drifted(self) -> bool:
        return self.kind != ON_TRACK


def load(path: Path) -> list[Case]:
    cases = []
    for raw in yaml.safe_load(path.read_text()):
        outputs = [Output(o["step"], o["instructions"], o["output"]) for o in raw["outputs"]]
        cases.append(Case(raw["id"], raw["kind"], raw["goal"],
                          Constraints.model_validate(raw["constraints"]), list(raw["plan"]),
                          outputs))
    return cases


@dataclass
class Flags:
    """Which signals flagged a case as drifted (None: the signal did not answer)."""

    case: Case
    best_similarity: float
    flags: dict[str, bool | None] = field(default_factory=dict)


async def prefilter_flags(cases: list[Case], embedder: Any, min_similarity: float
                          ) -> list[Flags]:
    # at once: the embedder batches concurrent calls into few model passes
    found = await asyncio.gather(*(similarities(embedder, c.goal, c.outputs) for c in cases))
    return [Flags(case, min(s.best for s in sims),
                  {"prefilter": bool(off_topic(sims, min_similarity))})
            for case, sims in zip(cases, found, strict=True)]


async def add_judge(flags: list[Flags], llm: LLM, concurrency: int = 4) -> None:
    """The judge on every case, and the whole check (the judge only where the pre-filter
    passed the case, as a grounding check runs)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(f: Flags) -> None:
        async with gate:
            try:
                verdict = await judge(llm, f.case.goal, f.case.constraints.lines(), f.case.plan,
                                      [], [(o.title, o.text) for o in f.case.outputs],
                                      CallContext(None, None, None))
                f.flags["judge"] = not verdict.aligned or bool(verdict.violated)
            except LLMError:
                f.flags["judge"] = None
        f.flags["check"] = True if f.flags["prefilter"] else f.flags["judge"]

    await asyncio.gather(*(one(f) for f in flags))


def table(flags: list[Flags], signals: Iterable[str] = SIGNALS) -> str:
    """Detection per drift kind (and false alarms on on-track cases) for each signal."""
    signals = [s for s in signals if any(s in f.flags for f in flags)]
    kinds = sorted({f.case.kind for f in flags}, key=lambda k: (k == ON_TRACK, k))
    rows = [f"{'kind':<26}{'cases':>6}" + "".join(f"{s:>12}" for s in signals)]
    for kind in kinds:
        group = [f for f in flags if f.case.kind == kind]
        cells = []
        for s in signals:
            answered = [f.flags[s] for f in group if f.flags.get(s) is not None]
            hit = sum(bool(x) for x in answered)
            cells.append(f"{hit}/{len(answered)}" if answered else "n/a")
        label = f"{kind} (false alarms)" if kind == ON_TRACK else kind
        rows.append(f"{label:<26}{len(group):>6}" + "".join(f"{c:>12}" for c in cells))
    drifted = [f for f in flags if f.case.drifted]
    total = []
    for s in signals:
        answered = [f.flags[s] for f in drifted if f.flags.get(s) is not None]
        total.append(f"{sum(bool(x) for x in answered)}/{len(answered)}" if answered else "n/a")
    rows.append(f"{'all drifted':<26}{len(drifted):>6}" + "".join(f"{c:>12}" for c in total))
    return "\n".join(rows)


def best_threshold(flags: list[Flags], kinds: set[str], max_false_alarms: float
                   ) -> tuple[float, float, float]:
    """Similarity alone at its best on `kinds`: (threshold, detection, false alarms) of the
    threshold that catches most of them within `max_false_alarms` on the on-track cases."""
    on = [f.best_similarity for f in flags if f.case.kind == ON_TRACK]
    bad = [f.best_similarity for f in flags if f.case.kind in kinds]
    best = (0.0, 0.0, 0.0)
    for t in sorted({x + 1e-6 for x in on + bad}):
        fa = sum(x < t for x in on) / len(on)
        caught = sum(x < t for x in bad) / len(bad)
        if fa <= max_false_alarms and caught > best[1]:
            best = (t, caught, fa)
    return best
