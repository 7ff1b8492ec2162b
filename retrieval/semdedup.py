"""SemDeDup at index time: near-duplicate groups within each cluster, one sample kept per group.

SemDeDup (Abbas et al., 2023) removes semantic duplicates cheaply by comparing embeddings only inside
k-means clusters. Here, per cluster of the pool index:

1. the cluster's samples are ranked by cosine to the cluster's mean direction (nearest first, ties by
   sample id), so the kept sample of a group is its most central one and the result does not depend on
   the order the store returns points in;
2. "near-duplicate" means what it means for re-ranking (retrieval/dedup.py): the mean of the text cosine
   and the image-thumbnail correlation above ``threshold`` — one question asked of many different images
   is many lessons, not one. The joined cosine can only exceed ``threshold`` when the text cosine exceeds
   ``2 * threshold - 1``, so that exact pre-filter runs first on the stored text vectors, and only samples
   with a text neighbour above it have their image opened (in a templated pool that is most samples; in a
   free-form pool few);
3. a duplicate teaches the same answer: samples with a short reference answer (at most
   ``SHORT_ANSWER_WORDS`` words, VQA-style) are compared only with samples of the same normalised answer
   (on the demo pool, "what kind of shape is in the picture?" over two similar thumbnails answered
   "square" and "triangle" was the main false mark); long free-form answers are not compared;
4. greedily in rank order, a sample whose joined cosine to an already kept sample exceeds ``threshold`` is
   marked ``dup_of`` that (most similar) kept sample; otherwise it is kept. So every marked sample is a
   near-duplicate of its own kept sample (no chains: a sample similar only to a marked one stays).

Cost is bounded: comparisons never leave a cluster, and every similarity is a ``BLOCK x BLOCK`` matrix
product (memory ``BLOCK**2`` floats, whatever the cluster's size); the greedy step loops in Python only
over the candidates of step 2. Marked samples stay in the store (``dup_of`` in their payload) and the
index's queries and uniform draws leave them out. benchmarks/semdedup.py measures it against the index build.

The default threshold, 0.95, is SemDeDup's epsilon = 0.05 on the joined cosine, chosen on the demo pool's
planted near-duplicates (the same image re-asked in other words, or the scene moved by a pixel): see
benchmarks/results/semdedup.json for what 0.90 / 0.93 / 0.95 / 0.97 mark there. The thumbnail is 16 x 16
(8 x 8, the re-rank's, could not tell a square from a triangle of the same colour and place).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLD = 0.95
BLOCK = 2048
SIGNATURE_SIDE = 16
SHORT_ANSWER_WORDS = 4

# The candidates' ids -> (their unit image thumbnails, their reference answers); None: text vectors only
DetailsFn = Callable[[list[str]], tuple[np.ndarray, list[str]]]


@dataclass
class ClusterDedup:
    duplicates: dict[str, str]  # marked sample id -> the kept sample id it duplicates
    candidates: int  # samples with a text neighbour above the pre-filter (their image was read)


@dataclass
class DedupSummary:
    threshold: float
    duplicates: dict[str, str] = field(default_factory=dict)
    candidates: int = 0
    clusters: int = 0
    seconds: float = 0.0

    @property
    def marked(self) -> int:
        return len(self.duplicates)

    @property
    def groups(self) -> int:
        """Kept samples that have at least one duplicate marked against them."""
        return len(set(self.duplicates.values()))

    def add(self, result: ClusterDedup) -> None:
        self.duplicates.update(result.duplicates)
        self.candidates += result.candidates
        self.clusters += 1

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "marked": self.marked, "groups": self.groups,
                "candidates": self.candidates, "clusters": self.clusters, "seconds": round(self.seconds, 3)}


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def centrality_order(ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """Row indices, nearest the cluster's mean direction first (ties by id): who is kept in a group."""
    centre = vectors.mean(axis=0)
    centre = centre / max(float(np.linalg.norm(centre)), 1e-12)
    closeness = vectors @ centre
    return np.asarray(sorted(range(len(ids)), key=lambda i: (-round(float(closeness[i]), 6), ids[i])), dtype=np.int64)


def has_neighbour_above(vectors: np.ndarray, threshold: float, block: int = BLOCK) -> np.ndarray:
    """(n,) bool: the row has another row with cosine above ``threshold`` (unit rows; upper-triangle tiles)."""
    n = len(vectors)
    found = np.zeros(n, dtype=bool)
    for a in range(0, n, block):
        rows = vectors[a : a + block]
        for b in range(a, n, block):
            sims = rows @ vectors[b : b + block].T
            if a == b:
                np.fill_diagonal(sims, -1.0)
            hit = sims > threshold
            found[a : a + len(rows)] |= hit.any(axis=1)
            found[b : b + sims.shape[1]] |= hit.any(axis=0)
    return found


def greedy_duplicates(vectors: np.ndarray, threshold: float, block: int = BLOCK) -> np.ndarray:
    """(n,) int: for rows in their given (rank) order, the row index of the kept row each duplicates, or -1
    when the row is kept itself. A row duplicates its most similar kept row above ``threshold``."""
    n = len(vectors)
    dup_of = np.full(n, -1, dtype=np.int64)
    for b in range(0, n, block):
        rows = vectors[b : b + block]
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        best_at = np.full(len(rows), -1, dtype=np.int64)
        for a in range(0, b, block):  # earlier blocks are decided: compare with their kept rows only
            kept = np.flatnonzero(dup_of[a : a + block] < 0)
            if kept.size == 0:
                continue
            sims = rows @ vectors[a + kept].T
            at = sims.argmax(axis=1)
            top = sims[np.arange(len(rows)), at]
            better = top > best
            best[better], best_at[better] = top[better], a + kept[at[better]]
        inner = rows @ rows.T
        # only a row with an earlier row of its block above the threshold needs the sequential look
        close_earlier = np.triu(inner > threshold, 1).any(axis=0)
        kept_here: list[int] = []
        for r in range(len(rows)):  # within the block, in rank order
            if kept_here and close_earlier[r]:
                sims = inner[r, kept_here]
                j = int(sims.argmax())
                if sims[j] > best[r]:
                    best[r], best_at[r] = sims[j], b + kept_here[j]
            if best[r] > threshold:
                dup_of[b + r] = best_at[r]
            else:
                kept_here.append(r)
    return dup_of


def joined_vectors(text_unit: np.ndarray, image_signatures: np.ndarray) -> np.ndarray:
    """Text + image as retrieval/dedup.py joins them (each half weighted 1/sqrt(2)), then unit length: two
    samples with images get (text cosine + image correlation) / 2; two without, the text cosine; one of
    each, at most 0.71 (never duplicates)."""
    return unit(np.hstack([text_unit, image_signatures]) / np.sqrt(2.0))


def answer_key(answer: str) -> str | None:
    """The normalised answer when it is short (VQA-style), else None (free-form answers are not compared)."""
    words = "".join(ch if ch.isalnum() else " " for ch in answer.lower()).split()
    return " ".join(words) if len(words) <= SHORT_ANSWER_WORDS else None


def cluster_duplicates(ids: Sequence[str], text_vectors: np.ndarray, details: DetailsFn | None, threshold: float,
                       block: int = BLOCK) -> ClusterDedup:
    """One cluster: which samples are near-duplicates of which kept sample (see the module's steps)."""
    if len(ids) < 2:
        return ClusterDedup({}, 0)
    text = unit(text_vectors)
    order = centrality_order(ids, text)
    ranked = text[order]
    prefilter = 2 * threshold - 1 if details is not None else threshold
    rows = np.flatnonzero(has_neighbour_above(ranked, prefilter, block))  # positions in rank order
    if rows.size < 2:
        return ClusterDedup({}, int(rows.size))
    members = order[rows]  # the candidates' row indices, still in rank order
    names = [ids[i] for i in members.tolist()]
    if details is None:
        vectors, groups = ranked[rows], {None: np.arange(len(rows))}
    else:
        signatures, answers = details(names)
        # no candidate with a readable image: the joined cosine is the text cosine (skip the zero half)
        vectors = joined_vectors(ranked[rows], signatures) if signatures.any() else ranked[rows]
        keys = [answer_key(a) for a in answers]
        groups = {}
        for position, key in enumerate(keys):
            groups.setdefault(key, []).append(position)
    duplicates: dict[str, str] = {}
    for positions in groups.values():  # each answer group in rank order
        positions = np.asarray(positions, dtype=np.int64)
        dup_of = greedy_duplicates(vectors[positions], threshold, block)
        for i in np.flatnonzero(dup_of >= 0).tolist():
            duplicates[names[positions[i]]] = names[positions[dup_of[i]]]
    return ClusterDedup(duplicates, int(rows.size))


def image_details(fetch: Callable[[list[str]], list], image_root) -> DetailsFn:
    """``details`` from a store's ``fetch`` (ids -> Samples): each sample's first image's thumbnail and its
    reference answer, read only for the candidates."""
    from tutorloop.retrieval.dedup import image_signature

    def details(names: list[str]) -> tuple[np.ndarray, list[str]]:
        samples = fetch(names)
        signatures = np.stack([image_signature(image_root, s.images[0] if s.images else None, SIGNATURE_SIDE)
                               for s in samples])
        return signatures, [s.reference for s in samples]

    return details


def dedup_store(index, image_root, clusters: int, threshold: float) -> DedupSummary:
    """SemDeDup over a written pool index, one cluster at a time: find the near-duplicates and mark them in
    the store (``index.mark_duplicates``). ``index`` is a PoolIndex or an EdgeIndex (the same interface)."""
    summary, start = DedupSummary(threshold), time.perf_counter()
    details = image_details(index.fetch, image_root)
    for cluster in range(clusters):
        ids, vectors = index.cluster_vectors(cluster)
        summary.add(cluster_duplicates(ids, vectors, details, threshold))
    index.mark_duplicates(summary.duplicates)
    summary.seconds = time.perf_counter() - start
    return summary
