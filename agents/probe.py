"""The forgetting probe: what the student already does right, drawn once per run from the pool.

A run without a generic split still measures what each round costs the student elsewhere. Before the first
round the untouched student answers a draw from the pool spread over its clusters (one cluster after another,
each in a seeded order); the first ``n`` it answers right *in clusters it mostly answers right* are the probe.
A right answer in a cluster the student mostly gets wrong is a lucky guess, which any training flips: counted,
it would read as forgetting what the student never knew. Those samples are never selected,
replayed or used as anchors (the loop excludes them), so the probe's accuracy after a round is an honest
measure of forgetting: 1.0 before training by construction, and every point below it a point forgotten.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np

from tutorloop.retrieval.index import PoolIndex
from tutorloop.retrieval.records import Sample
from tutorloop.training.evaluate import evaluate
from tutorloop.training.student import Student

log = logging.getLogger(__name__)
MAX_DRAWN_FACTOR = 8  # answer at most this many times n pool samples looking for n right ones
KNOWN_CLUSTER_ACCURACY = 0.5  # a cluster whose answered samples the student gets right at least this often
FEW = 50  # below this many, forgetting measured on the probe is coarse: say so


@dataclass(frozen=True)
class Probe:
    samples: list[Sample]
    answered: int  # pool samples the untouched student answered to find them

    def reason(self, wanted: int) -> str:
        return (f"probe: {len(self.samples)} of {wanted} wanted, answered right by the untouched student in "
                f"clusters it mostly answers right ({self.answered} pool samples answered, spread over clusters)")


def clustered_order(index: PoolIndex, seed: int) -> dict[str, int]:
    """Every retrievable id with its cluster, one cluster after another: the first of each cluster (in a seeded
    order), then the second, ..."""
    retrievable = set(index.all_ids())
    by_cluster: dict[int, list[str]] = defaultdict(list)
    for payload in index.payloads(["sample_id", "cluster"]):
        if payload["sample_id"] in retrievable:
            by_cluster[int(payload.get("cluster", -1))].append(payload["sample_id"])
    rng = np.random.default_rng([seed, 7])
    columns = []
    for _, ids in sorted(by_cluster.items()):
        ids = sorted(ids)
        columns.append([ids[i] for i in rng.permutation(len(ids))])
    cluster_of = {i: c for c, ids in by_cluster.items() for i in ids}
    return {i: cluster_of[i] for row in zip_longest(*columns) for i in row if i is not None}


def draw_probe(untouched: Student, index: PoolIndex, image_root: Path | None, n: int, *, seed: int, matcher: str,
               batch_size: int, max_new_tokens: int) -> Probe:
    """Up to ``n`` pool samples ``untouched`` answers right in clusters it mostly answers right, spread over the
    pool's clusters."""
    clusters = clustered_order(index, seed)
    order = list(clusters)[: MAX_DRAWN_FACTOR * n]
    answered: list[tuple[Sample, bool]] = []
    right: list[Sample] = []
    for start in range(0, len(order), 2 * n):
        chunk = index.fetch(order[start : start + 2 * n])
        result = evaluate(untouched, chunk, image_root, matcher=matcher, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, progress=False)
        answered += [(s, r.correct) for s, r in zip(chunk, result.records, strict=True)]
        right = _known_right(answered, clusters)
        if len(right) >= n:
            break
    probe = Probe(right[:n], len(answered))
    if len(probe.samples) < min(n, FEW):
        log.warning("%s: forgetting measured on so few samples is coarse; give --generic FILE (samples of what the "
                    "student must keep doing) for a finer measure", probe.reason(n))
    return probe


def _known_right(answered: list[tuple[Sample, bool]], clusters: dict[str, int]) -> list[Sample]:
    """The right answers of the clusters the student answers right at least KNOWN_CLUSTER_ACCURACY of the time."""
    tally: dict[int, list[bool]] = defaultdict(list)
    for sample, correct in answered:
        tally[clusters[sample.id]].append(correct)
    known = {c for c, flags in tally.items() if sum(flags) >= KNOWN_CLUSTER_ACCURACY * len(flags)}
    return [sample for sample, correct in answered if correct and clusters[sample.id] in known]
