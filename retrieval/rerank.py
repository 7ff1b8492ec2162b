"""Re-rank retrieved candidates: relevance, the student's perturbation score, cluster diversity.

The student is not imported here (retrieval does not depend on training): the perturbation score
arrives as a function ``ids -> scores`` that the loop builds from the student, and it is only ever
called on the shortlist, never on the whole pool.

Each gap gets ``share`` samples. Per gap, in order:
1. near-duplicates are removed (cosine above a threshold to a better-ranked candidate);
2. relevance and perturbation are min-max normalised within the gap and mixed by their weights;
3. a greedy pick by that mix, where no cluster may take more than ``max_cluster_fraction`` of the
   share while other clusters still have candidates (a second pass fills what the quota left empty).
Every selected sample keeps its scores and a one-line reason; so do the ones dropped as duplicates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

PerturbationFn = Callable[[Sequence[str]], np.ndarray]
VectorFn = Callable[[Sequence[str]], np.ndarray]  # ids -> one dedup vector per id (retrieval/dedup.py)


class RerankConfig(BaseModel):
    relevance_weight: float = Field(1.0, ge=0)
    perturbation_weight: float = Field(0.5, ge=0)
    use_perturbation: bool = True
    perturbation_words: int = Field(2, ge=0, description="words deleted per perturbation")
    perturbation_draws: int = Field(3, ge=1, description="perturbations averaged per sample")
    use_clusters: bool = True
    max_cluster_fraction: float = Field(0.34, gt=0, le=1)
    dedup_threshold: float | None = Field(0.97, gt=0, le=1, description="cosine; None switches de-dup off")


class Candidate(BaseModel):
    """One retrieved sample for one gap (the best of its hits over that gap's queries)."""

    sample_id: str
    gap: str
    query: str
    relevance: float
    cluster: int | None = None
    vector: list[float] | None = None
    arms: list[str] = Field(default_factory=list, description="hybrid search arms that found it (skill-map, free-text)")


class SelectionWhy(BaseModel):
    """Why a sample was (or was not) selected: its gap, the query that found it, its scores, a reason line."""

    gap: str
    query: str
    relevance: float
    perturbation: float | None = None
    cluster: int | None = None
    score: float
    reason: str
    arms: list[str] = Field(default_factory=list, description="hybrid search arms that found it: skill-map "
                            "(restricted to the gap's skills), free-text (the queries unrestricted); empty: plain search")


class ScoredCandidate(SelectionWhy):
    sample_id: str
    selected: bool

    def why(self) -> SelectionWhy:
        return SelectionWhy.model_validate(self.model_dump(include=set(SelectionWhy.model_fields)))


def rerank(
    candidates_by_gap: dict[str, list[Candidate]],
    shares: dict[str, int],
    config: RerankConfig,
    perturbation: PerturbationFn | None = None,
    dedup_vectors: VectorFn | None = None,
) -> list[ScoredCandidate]:
    """Scored candidates of every gap, selected ones first within each gap, in a stable order.

    Near-duplicates are judged on ``dedup_vectors(ids)`` when given (text + image), else on the
    candidates' own (text) vectors.
    """
    kept = {gap: _drop_near_duplicates(cands, config.dedup_threshold, dedup_vectors)
            for gap, cands in candidates_by_gap.items()}
    pert = _perturbation_scores(kept, config, perturbation)
    scored: list[ScoredCandidate] = []
    for gap, (survivors, duplicates) in kept.items():
        scored += _pick(gap, survivors, shares.get(gap, 0), pert, config)
        scored += [_duplicate(c, of) for c, of in duplicates]
    return scored


def _drop_near_duplicates(
    candidates: list[Candidate], threshold: float | None, dedup_vectors: VectorFn | None
) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    ranked = sorted(candidates, key=lambda c: (-c.relevance, c.sample_id))
    if threshold is None or not ranked or (dedup_vectors is None and ranked[0].vector is None):
        return ranked, []
    raw = dedup_vectors([c.sample_id for c in ranked]) if dedup_vectors else [c.vector for c in ranked]
    vectors = _unit(np.asarray(raw, dtype=np.float32))
    keep: list[int] = []
    duplicates: list[tuple[Candidate, str]] = []
    for i in range(len(ranked)):
        sims = vectors[keep] @ vectors[i] if keep else np.empty(0)
        if sims.size and sims.max() > threshold:
            duplicates.append((ranked[i], ranked[keep[int(sims.argmax())]].sample_id))
        else:
            keep.append(i)
    return [ranked[i] for i in keep], duplicates


def _perturbation_scores(
    kept: dict[str, tuple[list[Candidate], list]], config: RerankConfig, perturbation: PerturbationFn | None
) -> dict[str, float]:
    if not (config.use_perturbation and perturbation and config.perturbation_weight > 0):
        return {}
    ids = sorted({c.sample_id for survivors, _ in kept.values() for c in survivors})
    if not ids:
        return {}
    return dict(zip(ids, (float(v) for v in perturbation(ids)), strict=True))


def _pick(
    gap: str, candidates: list[Candidate], share: int, pert: dict[str, float], config: RerankConfig
) -> list[ScoredCandidate]:
    relevance = _minmax([c.relevance for c in candidates])
    perturb = _minmax([pert.get(c.sample_id, 0.0) for c in candidates]) if pert else np.zeros(len(candidates))
    mix = config.relevance_weight * relevance + (config.perturbation_weight * perturb if pert else 0.0)
    order = sorted(range(len(candidates)), key=lambda i: (-mix[i], candidates[i].sample_id))
    cap = max(1, math.ceil(share * config.max_cluster_fraction)) if config.use_clusters else share
    chosen = _greedy_with_quota(order, [c.cluster for c in candidates], share, cap)
    per_cluster = Counter(candidates[i].cluster for i in chosen)
    rank_of = {i: r for r, i in enumerate(order, start=1)}
    out = []
    for i in sorted(range(len(candidates)), key=lambda i: (i not in chosen, rank_of[i])):
        c = candidates[i]
        reason = (
            f"gap '{gap}' via '{c.query}': rank {rank_of[i]}/{len(candidates)}, relevance {c.relevance:.3f}"
            + (f" (RRF of {' + '.join(c.arms)})" if c.arms else "")
            + (f", perturbation {pert[c.sample_id]:.3f}" if c.sample_id in pert else "")
            + (f", cluster {c.cluster} ({per_cluster[c.cluster]} of {len(chosen)} picked)" if c.cluster is not None else "")
        )
        if i not in chosen:
            reason = "not picked: " + ("share filled" if len(chosen) >= share else "cluster quota") + "; " + reason
        out.append(
            ScoredCandidate(
                sample_id=c.sample_id, gap=gap, query=c.query, relevance=c.relevance,
                perturbation=pert.get(c.sample_id), cluster=c.cluster, score=float(mix[i]),
                selected=i in chosen, reason=reason, arms=c.arms,
            )
        )
    return out


def _greedy_with_quota(order: list[int], clusters: list[int | None], share: int, cap: int) -> set[int]:
    chosen: list[int] = []
    taken: Counter = Counter()
    for i in order:  # first pass: respect the per-cluster cap
        if len(chosen) >= share:
            break
        if clusters[i] is None or taken[clusters[i]] < cap:
            chosen.append(i)
            taken[clusters[i]] += 1
    for i in order:  # second pass: fill what the quota left empty rather than under-spend the share
        if len(chosen) >= share:
            break
        if i not in chosen:
            chosen.append(i)
    return set(chosen)


def _duplicate(candidate: Candidate, of: str) -> ScoredCandidate:
    return ScoredCandidate(
        sample_id=candidate.sample_id, gap=candidate.gap, query=candidate.query, relevance=candidate.relevance,
        cluster=candidate.cluster, score=0.0, selected=False, reason=f"dropped: near-duplicate of {of}",
        arms=candidate.arms,
    )


def _minmax(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return array
    span = array.max() - array.min()
    return (array - array.min()) / span if span > 0 else np.ones_like(array)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
