"""Drift detection measured honestly on a labelled set (tests/data/drift_cases.yaml): the
embedding pre-filter catches every blatant tangent with at most 5% false alarms, and cannot
see subtle drift on its own; the table shows each signal per drift kind."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from schedules import drift_set
from swarm.config import Settings
from swarm.llm.budget import Budget
from swarm.llm.client import LLM
from tests.conftest import migrated

CASES = Path(__file__).parent / "data" / "drift_cases.yaml"
SUBTLE = {"wrong_market", "wrong_audience", "scope_creep", "broken_constraint", "easier_goal"}


def test_the_labelled_set_is_half_drifted_and_mostly_subtle() -> None:
    cases = drift_set.load(CASES)
    drifted = [c for c in cases if c.drifted]
    assert len(cases) >= 40 and len(drifted) * 2 == len(cases)
    assert sum(c.kind in SUBTLE for c in drifted) > 0.75 * len(drifted)
    assert len({c.id for c in cases}) == len(cases)


async def test_the_pre_filter_catches_every_blatant_tangent_with_few_false_alarms(
        embedder: Any, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, memory_enabled=False, offline_latency_ms=0)
    cases = drift_set.load(CASES)
    flags = await drift_set.prefilter_flags(cases, embedder, settings.grounding_min_similarity)
    db = migrated(f"sqlite:///{tmp_path / 'judge.db'}")
    llm = LLM(settings, Budget(settings, db))
    try:
        await drift_set.add_judge(flags, llm)  # the offline model as judge
    finally:
        llm.close()
        db.close()
    print("\n" + drift_set.table(flags))
    threshold, caught, alarms = drift_set.best_threshold(flags, SUBTLE, 0.10)
    print(f"similarity alone on subtle drift, at its best within 10% false alarms: "
          f"{caught:.0%} caught ({alarms:.0%} false alarms, threshold {threshold:.3f})")

    blatant = [f for f in flags if f.case.kind == "off_topic"]
    on_track = [f for f in flags if f.case.kind == drift_set.ON_TRACK]
    assert blatant and all(f.flags["prefilter"] for f in blatant)
    assert sum(bool(f.flags["prefilter"]) for f in on_track) <= 0.05 * len(on_track)
    assert caught < 0.75  # similarity is the pre-filter, not the detector
    # the whole check never does worse than its pre-filter
    assert all(f.flags["check"] for f in flags if f.flags["prefilter"])
