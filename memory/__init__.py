"""Team memory: sentence embeddings in per-team FAISS indexes, texts and metadata in SQL."""

from __future__ import annotations

from memory.embedder import Embedder
from memory.index import HNSW_THRESHOLD, IndexConfig, TeamIndex
from memory.store import KINDS, Recalled, TeamMemory

__all__ = [
    "HNSW_THRESHOLD",
    "KINDS",
    "Embedder",
    "IndexConfig",
    "Recalled",
    "TeamIndex",
    "TeamMemory",
]
