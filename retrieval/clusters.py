"""Pseudo-skill clusters of the pool: MiniBatchKMeans over instruction embeddings.

The model is fitted on a seeded uniform sample of the pool's vectors and then assigns every vector in
batches, so memory does not grow with the pool. ``auto`` picks k from a small grid by the silhouette
score (cosine) on that sample; the chosen k, its score and the whole grid are reported.

All of it runs with one BLAS/OpenMP thread: the data is small (a few thousand vectors), and on a busy
machine the thread pools' spin-waiting made a k-means fit ~50x slower (2 s instead of 0.04 s, measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

AUTO_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
SILHOUETTE_SAMPLE = 2000  # silhouette is O(n^2): score on at most this many points
MIN_POINTS_PER_CLUSTER = 10  # auto never proposes a k with fewer points per cluster than this, on average

ClusterSpec = int | Literal["auto"]


def parse_clusters(value: str) -> ClusterSpec:
    """The ``--clusters`` flag: a positive integer or ``auto``."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"--clusters must be a positive integer or 'auto', got {value!r}") from None
    if k < 1:
        raise ValueError(f"--clusters must be at least 1, got {k}")
    return k


@dataclass
class ClusterFit:
    model: MiniBatchKMeans | None  # None when there is a single cluster (nothing to fit)
    k: int
    silhouette: float | None
    grid: dict[int, float] = field(default_factory=dict)  # k -> silhouette of the grid search, for auto

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        if self.model is None or len(vectors) == 0:
            return np.zeros(len(vectors), dtype=np.int64)
        with threadpool_limits(limits=1):
            return self.model.predict(np.asarray(vectors, dtype=np.float32)).astype(np.int64)


def fit_clusters(sample: np.ndarray, spec: ClusterSpec, *, seed: int = 0) -> ClusterFit:
    """Fit on ``sample`` (rows = normalised vectors); ``spec`` is k or ``auto``."""
    with threadpool_limits(limits=1):
        return _fit(sample, spec, seed)


def _fit(sample: np.ndarray, spec: ClusterSpec, seed: int) -> ClusterFit:
    sample = np.asarray(sample, dtype=np.float32)
    n = len(sample)
    if spec == "auto":
        grid = [k for k in AUTO_GRID if k <= max(2, n // MIN_POINTS_PER_CLUSTER) and k < n]
        if not grid:
            return ClusterFit(None, 1, None)
        # The grid search uses one k-means init on at most SILHOUETTE_SAMPLE points (it only ranks k);
        # the chosen k is then fitted properly on the whole sample.
        probe = _subsample(sample, SILHOUETTE_SAMPLE, seed)
        scores = {k: _silhouette(probe, _kmeans(probe, k, seed, n_init=1), seed) for k in grid}
        scores = {k: s for k, s in scores.items() if s is not None}
        if not scores:
            return ClusterFit(None, 1, None)
        best = max(scores, key=lambda k: (scores[k], -k))  # ties go to the smaller k
        model = _kmeans(sample, best, seed)
        return ClusterFit(model, best, _silhouette(sample, model, seed), scores)
    k = min(int(spec), n)
    if k <= 1:
        return ClusterFit(None, 1, None)
    model = _kmeans(sample, k, seed)
    return ClusterFit(model, k, _silhouette(sample, model, seed))


def _kmeans(sample: np.ndarray, k: int, seed: int, n_init: int = 3) -> MiniBatchKMeans:
    return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, batch_size=1024).fit(sample)


def _subsample(sample: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(sample) <= size:
        return sample
    return sample[np.random.default_rng(seed).choice(len(sample), size, replace=False)]


def _silhouette(sample: np.ndarray, model: MiniBatchKMeans, seed: int) -> float | None:
    labels = model.labels_
    if not 2 <= len(set(labels.tolist())) <= len(sample) - 1:  # silhouette is undefined otherwise
        return None
    size = min(len(sample), SILHOUETTE_SAMPLE)
    return float(silhouette_score(sample, labels, metric="cosine", sample_size=size, random_state=seed))
