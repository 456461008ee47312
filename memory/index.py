"""One team's FAISS index: exact inner product while small, HNSW above a measured size."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from memory.logfmt import log_event

log = logging.getLogger(__name__)

# Where HNSW overtakes exact search: the crossover measured by `bench/memory.py` (table "Flat
# vs HNSW single-query p50"), real all-MiniLM-L6-v2 vectors (384-d), 2 cores, k=10, best
# p50 of three alternating passes of 1,000 queries through TeamIndex.search. With the chosen
# HNSW (M=32, efConstruction=80, efSearch=64): flat 0.059 / HNSW 0.074 ms at 500 vectors,
# 0.078 / 0.074 ms at 1,000, 0.108 / 0.084 at 1,500, 0.253 / 0.117 at 4,000, 0.765 / 0.265
# at 8,000; flat grows linearly (~72 ms at 100k on a busy machine, ~13-17 ms when quiet).
# So the curves cross at about 1,000 vectors, and a team switches to HNSW above that.
HNSW_THRESHOLD = 1000


@contextmanager
def one_thread() -> Iterator[None]:
    """Run FAISS on the calling thread alone. FAISS opens its OpenMP team even for a single
    query; on a busy machine the query then waits for a team thread the OS has not scheduled:
    at 100k HNSW vectors on 2 loaded cores, p50 1.7-16 ms and p99 40-45 ms with the team
    against 0.23 ms and 11-13 ms without (bench/memory.py). OpenMP's thread count is per
    calling thread, so builds elsewhere keep their team."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class CorruptIndexError(Exception):
    """An index file that cannot be trusted (truncated, bit-rotted, wrong dimension)."""


@dataclass(frozen=True)
class IndexConfig:
    """Tunables of a team index.

    HNSW values from `bench/memory.py --sweep` at 100k real memories (recall@10 against
    exact search / single-query p50, on a busy 2-core machine): M=32, efConstruction=80 gives
    0.958 / 0.25 ms at efSearch=32, 0.984 / 0.44 ms at 64, 0.993 / 0.75 ms at 128. M=16 needs
    efSearch=128 for the same recall and is no faster; efConstruction=40 costs recall."""

    hnsw_threshold: int = HNSW_THRESHOLD
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    # HNSW cannot delete: forgotten ids become tombstones, filtered at query time, and the
    # graph is rebuilt (from its own stored vectors, no re-embedding) past this fraction.
    max_tombstone_fraction: float = 0.10


class TeamIndex:
    """Vectors of one team keyed by SQL row id (IndexIDMap2). Thread-safe."""

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.dim = dim
        self.config = config or IndexConfig()
        self._index: faiss.IndexIDMap2 = self._new_flat()
        self._tombstones: set[int] = set()
        self._tombstone_params: Any = None
        self._lock = threading.RLock()
        self.dirty = False

    # -- what is in it ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """ "flat" (exact) or "hnsw" (approximate)."""
        return "hnsw" if self._is_hnsw(self._index) else "flat"

    @property
    def ntotal(self) -> int:
        """Live vectors: stored minus tombstoned."""
        with self._lock:
            return int(self._index.ntotal) - len(self._tombstones)

    @property
    def stored(self) -> int:
        """Vectors physically in the FAISS index, tombstones included."""
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> frozenset[int]:
        return frozenset(self._tombstones)

    def ids(self) -> np.ndarray:
        """Live ids, int64, in storage order."""
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
            if self._tombstones:
                ids = ids[~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))]
            return ids

    def __contains__(self, memory_id: object) -> bool:
        if not isinstance(memory_id, int | np.integer):
            return False
        with self._lock:
            if int(memory_id) in self._tombstones:
                return False
            return bool(np.any(faiss.vector_to_array(self._index.id_map) == int(memory_id)))

    # -- changes ---------------------------------------------------------------------------

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        id_array = np.ascontiguousarray(np.fromiter(ids, dtype=np.int64))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(id_array) != len(vectors):
            raise ValueError(f"{len(id_array)} ids for {len(vectors)} vectors")
        if not len(id_array):
            return
        with self._lock:
            if self._tombstones and self._tombstones.intersection(id_array.tolist()):
                # A reused id must not meet its old vector: drop the tombstoned ones first.
                self._compact()
            self._index.add_with_ids(vectors, id_array)
            self.dirty = True
            if self.kind == "flat" and self._index.ntotal > self.config.hnsw_threshold:
                self._rebuild(to_hnsw=True, reason="grew_past_threshold")

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids; returns how many were present. Removed ids are never returned again."""
        asked = np.fromiter(ids, dtype=np.int64)
        with self._lock:
            present = asked[np.isin(asked, faiss.vector_to_array(self._index.id_map))]
            wanted = [int(i) for i in np.unique(present) if int(i) not in self._tombstones]
            if not wanted:
                return 0
            self.dirty = True
            if self.kind == "flat":
                index: Any = self._index  # the Python wrapper takes an id array
                index.remove_ids(np.asarray(wanted, dtype=np.int64))
                return len(wanted)
            self._tombstones.update(wanted)
            self._tombstone_params = None
            stored = max(1, int(self._index.ntotal))
            if len(self._tombstones) > self.config.max_tombstone_fraction * stored:
                self._compact()
            return len(wanted)

    # -- queries ---------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, cosine similarity) for one unit query vector, best first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            live = int(self._index.ntotal) - len(self._tombstones)
            k = min(k, live)
            if k <= 0:
                return []
            with one_thread():
                scores, labels = self._index.search(query, k, params=self._search_params())
        return [
            (int(i), float(s))
            for i, s in zip(labels[0], scores[0], strict=True)
            if i >= 0 and int(i) not in self._tombstones
        ]

    def search_among(
        self, query: np.ndarray, ids: Iterable[int], k: int
    ) -> list[tuple[int, float]]:
        """Exact top-k restricted to `ids` (for selective filters), best first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        wanted = np.fromiter(ids, dtype=np.int64)
        with self._lock:
            id_map = faiss.vector_to_array(self._index.id_map)
            positions = np.flatnonzero(np.isin(id_map, wanted))
            if self._tombstones and len(positions):
                dead = np.fromiter(self._tombstones, dtype=np.int64)
                positions = positions[~np.isin(id_map[positions], dead)]
            if not len(positions):
                return []
            vectors = self._stored_vectors()[positions]
            found = id_map[positions]
        sims = vectors @ query
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(found[i]), float(sims[i])) for i in top]

    # -- persistence -----------------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, list[int]]:
        """The FAISS bytes and the tombstoned ids they still hold, taken together."""
        with self._lock:
            self.dirty = False
            return faiss.serialize_index(self._index).tobytes(), sorted(self._tombstones)

    @classmethod
    def deserialize(cls, payload: bytes, dim: int, config: IndexConfig | None = None) -> TeamIndex:
        try:
            loaded = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:
            raise CorruptIndexError(f"faiss could not read it: {exc}") from exc
        if not isinstance(loaded, faiss.IndexIDMap2) or loaded.d != dim:
            raise CorruptIndexError(f"expected an IndexIDMap2 of dimension {dim}")
        team_index = cls(dim, config)
        team_index._index = loaded
        if team_index._is_hnsw(loaded):
            team_index._hnsw(loaded).hnsw.efSearch = team_index.config.ef_search
        return team_index

    # -- internals -------------------------------------------------------------------------

    def _new_flat(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_hnsw(self) -> faiss.IndexIDMap2:
        hnsw = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.config.ef_construction
        hnsw.hnsw.efSearch = self.config.ef_search
        return faiss.IndexIDMap2(hnsw)

    @staticmethod
    def _is_hnsw(index: faiss.IndexIDMap2) -> bool:
        return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)

    @staticmethod
    def _hnsw(index: faiss.IndexIDMap2) -> Any:
        return faiss.downcast_index(index.index)

    def _stored_vectors(self) -> np.ndarray:
        """Every stored vector, in storage order (a copy; caller holds the lock)."""
        inner: Any = faiss.downcast_index(self._index.index)
        flat: Any = faiss.downcast_index(inner.storage) if self._is_hnsw(self._index) else inner
        count = int(flat.ntotal)
        data = faiss.rev_swig_ptr(flat.get_xb(), count * self.dim)
        return np.array(data, dtype=np.float32, copy=True).reshape(count, self.dim)

    def _search_params(self) -> Any:
        if not self._tombstones or self.kind == "flat":
            return None
        if self._tombstone_params is None:
            dead = np.fromiter(self._tombstones, dtype=np.int64)
            batch = faiss.IDSelectorBatch(dead)
            params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.sel = faiss.IDSelectorNot(batch)
            params.efSearch = self.config.ef_search
            params.referenced = (batch, params.sel)  # keep the selectors alive
            self._tombstone_params = params
        return self._tombstone_params

    def _compact(self) -> None:
        self._rebuild(to_hnsw=self.ntotal > self.config.hnsw_threshold // 2, reason="compact")

    def _rebuild(self, *, to_hnsw: bool, reason: str) -> None:
        """Rebuild from the stored vectors minus tombstones (caller holds the lock)."""
        id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._stored_vectors()
        if self._tombstones:
            keep = ~np.isin(id_map, np.fromiter(self._tombstones, dtype=np.int64))
            id_map, vectors = id_map[keep], vectors[keep]
        fresh = self._new_hnsw() if to_hnsw else self._new_flat()
        if len(id_map):
            fresh.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(id_map))
        log_event(
            log,
            logging.INFO,
            "memory.index.rebuilt",
            reason=reason,
            kind="hnsw" if to_hnsw else "flat",
            vectors=len(id_map),
            dropped=len(self._tombstones),
        )
        self._index = fresh
        self._tombstones.clear()
        self._tombstone_params = None
        self.dirty = True
