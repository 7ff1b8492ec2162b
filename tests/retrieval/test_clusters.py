"""Clusters: the flag, auto k on separable blobs, clamping, batch assignment."""

from __future__ import annotations

import numpy as np
import pytest

from tutorloop.retrieval.clusters import fit_clusters, parse_clusters


def _blobs(k: int, per: int = 60, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    points = np.concatenate([c + 0.15 * rng.normal(size=(per, dim)) for c in centres])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_parse_clusters():
    assert parse_clusters("auto") == "auto" and parse_clusters(" AUTO ") == "auto"
    assert parse_clusters("12") == 12
    for bad in ("0", "-3", "many"):
        with pytest.raises(ValueError, match="--clusters"):
            parse_clusters(bad)


def test_auto_finds_the_number_of_blobs():
    points = _blobs(5)
    fit = fit_clusters(points, "auto", seed=0)
    assert fit.k == 5 == max(fit.grid, key=fit.grid.get) and fit.silhouette > 0.5
    labels = fit.assign(points)
    assert sorted(np.bincount(labels).tolist()) == [60] * 5


def test_fixed_k_is_clamped_and_deterministic():
    points = _blobs(3, per=4)
    assert fit_clusters(points[:3], 8).k == 3
    a, b = fit_clusters(points, 3, seed=1), fit_clusters(points, 3, seed=1)
    assert np.array_equal(a.assign(points), b.assign(points))
    one = fit_clusters(points, 1)
    assert one.k == 1 and one.silhouette is None and not one.assign(points).any()
    assert fit_clusters(points[:1], "auto").k == 1
