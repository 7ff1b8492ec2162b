"""Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): ranked lists into one ranking.

A sample at rank r (1-based) of a list earns ``1 / (k + r)`` from it; its fused score is the sum over
the lists it appears in. Ranks, not scores, are fused, so a filtered dense search and an unrestricted
one (whose cosines are not comparable: the filter changes what "near" means) count alike. ``k = 60``
is the paper's constant: it damps the weight of the very first ranks.

The embedded store fuses here; a Qdrant server fuses with its query API (prefetch + RRF). Qdrant scores
``1 / (k' + r - 1)``, so ``SERVER_RRF_K = RRF_K + 1`` makes both give the same scores (tested).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

RRF_K = 60
SERVER_RRF_K = RRF_K + 1  # Qdrant's RRF uses the 0-based position: 1 / (position + k)

Key = TypeVar("Key", bound=Hashable)


@dataclass
class Fused(Generic[Key]):
    key: Key
    score: float
    ranks: dict[int, int] = field(default_factory=dict)  # list index -> 1-based rank in that list


def rrf(lists: Sequence[Sequence[Key]], *, k: int = RRF_K, limit: int | None = None) -> list[Fused[Key]]:
    """Fuse ranked lists of keys (best first; a key repeated within a list counts at its first rank).

    Ties in the fused score go to the key seen first (list order, then rank), so the result is
    deterministic for the same inputs.
    """
    if k < 0:
        raise ValueError(f"rrf: k must be >= 0, got {k}")
    fused: dict[Key, Fused[Key]] = {}
    for i, ranked in enumerate(lists):
        for rank, key in enumerate(dict.fromkeys(ranked), start=1):
            entry = fused.setdefault(key, Fused(key, 0.0))
            entry.score += 1.0 / (k + rank)
            entry.ranks[i] = rank
    order = sorted(fused.values(), key=lambda f: -f.score)  # stable: first seen wins a tie
    return order if limit is None else order[:limit]
