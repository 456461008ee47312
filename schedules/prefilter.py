"""The grounding pre-filter: embedding similarity of each recent output to its own step's
instructions and to the goal. It catches blatant tangents without a model call; subtle drift
(the wrong market, a broken constraint) reads as on-topic to it, which is what the judge is for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Output:
    title: str
    instructions: str
    text: str


@dataclass(frozen=True)
class Similarity:
    title: str
    to_step: float
    to_goal: float

    @property
    def best(self) -> float:
        return max(self.to_step, self.to_goal)


async def similarities(embedder: Any, goal: str, outputs: list[Output]) -> list[Similarity]:
    """Cosine similarities (the embedder's vectors are unit length), one model pass."""
    if not outputs:
        return []
    texts = [goal] + [o.instructions for o in outputs] + [o.text[:4000] for o in outputs]
    vectors = np.asarray(await embedder.encode(texts))
    n = len(outputs)
    goal_v, steps_v, outs_v = vectors[0], vectors[1:n + 1], vectors[n + 1:]
    return [Similarity(o.title, float(np.dot(outs_v[i], steps_v[i])),
                       float(np.dot(outs_v[i], goal_v))) for i, o in enumerate(outputs)]


def off_topic(sims: list[Similarity], min_similarity: float) -> list[Similarity]:
    """The outputs close to neither their step nor the goal."""
    return [s for s in sims if s.best < min_similarity]
