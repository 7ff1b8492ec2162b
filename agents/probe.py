"""The forgetting probe: what the student already does right, drawn once per run from the pool.

A run without a generic split still measures what each round costs the student elsewhere. Before the first
round the untouched student answers a draw from the pool spread over its clusters (one cluster after another,
each in a seeded order); the first ``n`` it answers right are the probe. Those samples are never selected,
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
FEW = 50  # below this many, forgetting measured on the probe is coarse: say so


@dataclass(frozen=True)
class Probe:
    samples: list[Sample]
    answered: int  # pool samples the untouched student answered to find them

    def reason(self, wanted: int) -> str:
        return (f"probe: {len(self.samples)} of {wanted} wanted, the untouched student right on "
                f"{len(self.samples)} of {self.answered} pool samples answered (spread over clusters)")


def cluster_order(index: PoolIndex, seed: int) -> list[str]:
    """Every retrievable id, one cluster after another: the first of each cluster, then the second, ..."""
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
    return [i for row in zip_longest(*columns) for i in row if i is not None]


def draw_probe(untouched: Student, index: PoolIndex, image_root: Path | None, n: int, *, seed: int, matcher: str,
               batch_size: int, max_new_tokens: int) -> Probe:
    """Up to ``n`` pool samples ``untouched`` answers right, spread over the pool's clusters."""
    order = cluster_order(index, seed)[: MAX_DRAWN_FACTOR * n]
    right: list[Sample] = []
    answered = 0
    for start in range(0, len(order), 2 * n):
        chunk = index.fetch(order[start : start + 2 * n])
        result = evaluate(untouched, chunk, image_root, matcher=matcher, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, progress=False)
        answered += len(chunk)
        right += [s for s, r in zip(chunk, result.records, strict=True) if r.correct]
        if len(right) >= n:
            break
    probe = Probe(right[:n], answered)
    if len(probe.samples) < min(n, FEW):
        log.warning("%s: forgetting measured on so few samples is coarse; give --generic FILE (samples of what the "
                    "student must keep doing) for a finer measure", probe.reason(n))
    return probe
