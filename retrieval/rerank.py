"""Re-rank retrieved candidates: relevance, a student-side score chosen by name, cluster diversity.

The student is not imported here (retrieval does not depend on training): the student-side scores
arrive as `StudentScores` — scorer names and a function ``(name, ids) -> scores`` that the loop builds
from the student (training/scorers.py) — and are only ever asked for the shortlist, never the pool.

``RerankConfig.scorer`` says which score is mixed with relevance: one scorer by name, ``"entropy"``
(Adapt-∞'s rule: per cluster, the scorer whose scores on that cluster's candidates are the most spread
out — the Shannon entropy of their histogram over ``entropy_bins`` equal bins of the min-max normalised
scores; ties go to the earlier scorer in the registry's order), or ``"none"`` (relevance only).

Each gap gets ``share`` samples (a gap with fewer candidates passes the rest on: `pass_on_unfilled`).
Per gap, in order:
1. near-duplicates are removed (cosine above a threshold to a better-ranked candidate);
2. relevance and the chosen score are min-max normalised within the gap (the score per scorer, since
   the entropy rule may rank different clusters by different scorers) and mixed by their weights;
3. a greedy pick by that mix, where no cluster may take more than ``max_cluster_fraction`` of the
   share while other clusters still have candidates (a second pass fills what the quota left empty).
Every selected sample keeps its scores, the scorer that ranked it and a one-line reason; so do the ones
dropped as duplicates.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

PerturbationFn = Callable[[Sequence[str]], np.ndarray]
ScoreFn = Callable[[str, Sequence[str]], np.ndarray]  # (scorer name, ids) -> one score per id, higher preferred
VectorFn = Callable[[Sequence[str]], np.ndarray]  # ids -> one dedup vector per id (retrieval/dedup.py)
RULES = ("entropy", "none")  # scorer values that are rules, not scorers


@dataclass(frozen=True)
class StudentScores:
    """The student-side scorers on offer: their names (the entropy rule's choices, in tie-break order) and
    the function that scores ids by name (training/scorers.py's ScoringSession.score in the loop)."""

    names: tuple[str, ...]
    score: ScoreFn


class RerankConfig(BaseModel):
    relevance_weight: float = Field(1.0, ge=0)
    perturbation_weight: float = Field(0.5, ge=0, description=(
        "weight of the student-side score, whichever scorer gives it (named when perturbation was the only one)"))
    use_perturbation: bool = Field(True, description="False: no student-side score at all (the ablation flag)")
    # none by default: on the selection benchmark no scorer beat relevance only beyond the seed spread, and
    # perturbation cost ~65 s a run (README, "What a round does")
    scorer: str = Field("none", description=(
        "student-side score mixed with relevance: a scorer of training/scorers.py (perturbation, perplexity, "
        "image_grounding, el2n, answer_entropy), 'entropy' (per cluster, the scorer whose scores spread the "
        "most: Adapt-∞) or 'none' (relevance only, the default)"))
    entropy_bins: int = Field(10, ge=2, description="histogram bins of the entropy rule")
    perturbation_words: int = Field(2, ge=0, description="words deleted per perturbation")
    perturbation_draws: int = Field(3, ge=1, description="perturbations averaged per sample")
    use_clusters: bool = True
    max_cluster_fraction: float = Field(0.34, gt=0, le=1)
    dedup_threshold: float | None = Field(0.97, gt=0, le=1, description="cosine; None switches de-dup off")

    @property
    def active_scorer(self) -> str:
        """The scorer (or rule) in effect: 'none' when the student-side score is switched off or weighs 0."""
        return "none" if not self.use_perturbation or self.perturbation_weight == 0 else self.scorer


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
    scorer: str | None = Field(None, description=(
        "the student-side scorer that ranked it (a name of training/scorers.py, or 'none': relevance only); "
        "None when it was not re-ranked (a uniform draw, replay, a dropped duplicate)"))
    scores: dict[str, float] = Field(default_factory=dict, description="every student-side score computed for it")
    arms: list[str] = Field(default_factory=list, description="hybrid search arms that found it: skill-map "
                            "(restricted to the gap's skills), free-text (the queries unrestricted); empty: plain search")
    tied: int = Field(0, description=(
        "other candidates of its gap with the same score: their order is a seeded shuffle (the run's seed), "
        "neither file order nor id order"))


class ScoredCandidate(SelectionWhy):
    sample_id: str
    selected: bool

    def why(self) -> SelectionWhy:
        return SelectionWhy.model_validate(self.model_dump(include=set(SelectionWhy.model_fields)))


def rerank(
    candidates_by_gap: dict[str, list[Candidate]],
    shares: dict[str, int],
    config: RerankConfig,
    scores: StudentScores | PerturbationFn | None = None,
    dedup_vectors: VectorFn | None = None,
    seed: int = 0,
) -> list[ScoredCandidate]:
    """Scored candidates of every gap, selected ones first within each gap, in a stable order.

    ``scores`` are the student-side scorers (a bare ``ids -> scores`` function is the perturbation
    score alone). Near-duplicates are judged on ``dedup_vectors(ids)`` when given (text + image), else
    on the candidates' own (text) vectors. Equal scores are ordered by a shuffle seeded with ``seed``.
    """
    kept = {gap: _drop_near_duplicates(cands, config.dedup_threshold, dedup_vectors, seed)
            for gap, cands in candidates_by_gap.items()}
    chosen = _student_scores(kept, config, _as_student_scores(scores))
    shares = pass_on_unfilled(shares, {gap: len(survivors) for gap, (survivors, _) in kept.items()})
    scored: list[ScoredCandidate] = []
    for gap, (survivors, duplicates) in kept.items():
        scored += _pick(gap, survivors, shares.get(gap, 0), chosen, config, seed)
        scored += [_duplicate(c, of) for c, of in duplicates]
    return scored


def tie_order(seed: int, sample_id: str) -> bytes:
    """The order of candidates whose scores are equal: a shuffle seeded by the run, the same for a sample
    wherever it is met (a pool written in order of skill would otherwise hand ties to its first skill)."""
    return hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()


def _drop_near_duplicates(
    candidates: list[Candidate], threshold: float | None, dedup_vectors: VectorFn | None, seed: int
) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    ranked = sorted(candidates, key=lambda c: (-c.relevance, tie_order(seed, c.sample_id)))
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


@dataclass
class _Chosen:
    """Per sample id: the scorer that ranks it, its raw scores by scorer, and how that scorer was chosen."""

    rule: str  # the active scorer or rule
    scorer: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)

    def value(self, sample_id: str) -> float | None:
        name = self.scorer.get(sample_id)
        return None if name is None else self.values[sample_id][name]


def _as_student_scores(scores: StudentScores | PerturbationFn | None) -> StudentScores | None:
    if scores is None or isinstance(scores, StudentScores):
        return scores
    return StudentScores(("perturbation",), lambda name, ids: scores(ids))


def _student_scores(kept: dict[str, tuple[list[Candidate], list]], config: RerankConfig,
                    scores: StudentScores | None) -> _Chosen:
    rule = config.active_scorer if scores is not None else "none"
    survivors = {c.sample_id: c.cluster for cands, _ in kept.values() for c in cands}
    ids = sorted(survivors)
    if rule == "none" or not ids:
        return _Chosen(rule)
    names = scores.names if rule == "entropy" else (rule,)
    unknown = [n for n in names if n not in scores.names]
    if unknown:
        raise ValueError(f"rerank: unknown scorer {unknown[0]!r}; known: {', '.join(scores.names)} or {RULES}")
    raw = {name: np.asarray(scores.score(name, ids), dtype=np.float64) for name in names}
    chosen = _Chosen(rule, values={i: {n: float(raw[n][k]) for n in names} for k, i in enumerate(ids)})
    if rule != "entropy":
        chosen.scorer = dict.fromkeys(ids, rule)
        return chosen
    by_cluster: dict[int | None, list[int]] = {}
    for k, i in enumerate(ids):
        by_cluster.setdefault(survivors[i], []).append(k)
    for cluster, members in by_cluster.items():
        entropy = {n: histogram_entropy(raw[n][members], config.entropy_bins) for n in names}
        best = max(names, key=lambda n: (entropy[n], -names.index(n)))
        how = (f"entropy rule: {best} spreads the most on cluster {cluster} ({entropy[best]:.2f} nats over "
               f"{len(members)} candidates)")
        for k in members:
            chosen.scorer[ids[k]], chosen.how[ids[k]] = best, how
    return chosen


def histogram_entropy(values: np.ndarray, bins: int) -> float:
    """Shannon entropy (nats) of the histogram of min-max normalised ``values`` over ``bins`` equal bins of
    [0, 1]; 0 for fewer than two distinct values. Non-finite values are clipped to the finite range."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return 0.0
    values = np.clip(np.nan_to_num(values, nan=finite.min()), finite.min(), finite.max())
    span = finite.max() - finite.min()
    if span <= 0:
        return 0.0
    counts, _ = np.histogram((values - finite.min()) / span, bins=bins, range=(0.0, 1.0))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def pass_on_unfilled(shares: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """Shares where a gap with fewer candidates than its share keeps what it has and the rest goes to the
    gaps with candidates to spare, the largest share first: the round spends its budget. (A sample two
    gaps retrieve is a candidate of the one it is most relevant to, so a gap can come up short.)"""
    out = {gap: min(share, available.get(gap, 0)) for gap, share in shares.items()}
    unfilled = sum(shares.values()) - sum(out.values())
    for gap in sorted(out, key=lambda g: (-shares[g], g)):
        extra = min(unfilled, available.get(gap, 0) - out[gap])
        out[gap] += extra
        unfilled -= extra
    return out


def _pick(
    gap: str, candidates: list[Candidate], share: int, chosen: _Chosen, config: RerankConfig, seed: int
) -> list[ScoredCandidate]:
    relevance = _minmax([c.relevance for c in candidates])
    student = _per_scorer_minmax(candidates, chosen)
    mix = config.relevance_weight * relevance + (config.perturbation_weight * student if chosen.scorer else 0.0)
    mix = np.round(np.asarray(mix, dtype=np.float64), 9)  # equal up to float noise is a tie
    order = sorted(range(len(candidates)), key=lambda i: (-mix[i], tie_order(seed, candidates[i].sample_id)))
    same_score = Counter(mix.tolist())
    cap = max(1, math.ceil(share * config.max_cluster_fraction)) if config.use_clusters else share
    picked = _greedy_with_quota(order, [c.cluster for c in candidates], share, cap)
    per_cluster = Counter(candidates[i].cluster for i in picked)
    rank_of = {i: r for r, i in enumerate(order, start=1)}
    out = []
    for i in sorted(range(len(candidates)), key=lambda i: (i not in picked, rank_of[i])):
        c = candidates[i]
        name, value = chosen.scorer.get(c.sample_id), chosen.value(c.sample_id)
        reason = (
            f"gap '{gap}' via '{c.query}': rank {rank_of[i]}/{len(candidates)}, relevance {c.relevance:.3f}"
            + (f" (RRF of {' + '.join(c.arms)})" if c.arms else "")
            + (f", {name} {value:.3f}" if name is not None else ", relevance only")
            + (f" ({chosen.how[c.sample_id]})" if c.sample_id in chosen.how else "")
            + (f", cluster {c.cluster} ({per_cluster[c.cluster]} of {len(picked)} picked)" if c.cluster is not None else "")
            + (f", tied with {same_score[mix[i]] - 1} at score {mix[i]:.3f} (seeded shuffle)"
               if same_score[mix[i]] > 1 else "")
        )
        if i not in picked:
            reason = "not picked: " + ("share filled" if len(picked) >= share else "cluster quota") + "; " + reason
        values = chosen.values.get(c.sample_id, {})
        out.append(
            ScoredCandidate(
                sample_id=c.sample_id, gap=gap, query=c.query, relevance=c.relevance,
                perturbation=values.get("perturbation"), cluster=c.cluster, score=float(mix[i]),
                selected=i in picked, reason=reason, arms=c.arms, scorer=name or "none", scores=values,
                tied=same_score[mix[i]] - 1,
            )
        )
    return out


def _per_scorer_minmax(candidates: list[Candidate], chosen: _Chosen) -> np.ndarray:
    """Each candidate's chosen score, min-max normalised among the gap's candidates ranked by that scorer."""
    out = np.zeros(len(candidates))
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.sample_id in chosen.scorer:
            groups.setdefault(chosen.scorer[c.sample_id], []).append(i)
    for members in groups.values():
        out[members] = _minmax([chosen.value(candidates[i].sample_id) for i in members])
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
