"""Retrieval: each gap's queries against the pool index, as re-rank candidates; and the uniform draws.

A gap of share ``s`` keeps its ``factor * s`` most relevant candidates over all of its queries (each
query asks for that many: queries are often near-identical, so splitting the number between them
would return the same few samples). Samples already trained on are excluded in the query. A sample found by several gaps goes to the gap where it
is most relevant, so one sample is never counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from agents.planning import Gap
from retrieval.embed import embed_texts
from retrieval.index import PoolIndex
from retrieval.records import Sample
from retrieval.rerank import Candidate
from training.evaluate import DEFAULT_BATCH_SIZE, DEFAULT_MATCHER, DEFAULT_MAX_NEW_TOKENS, evaluate
from training.student import Student


class Embedder(Protocol):
    def encode(self, sentences: Sequence[str], **kwargs) -> np.ndarray: ...


def retrieve_candidates(
    gaps: Sequence[Gap], index: PoolIndex, embedder: Embedder, *, factor: int, exclude: frozenset[str]
) -> dict[str, list[Candidate]]:
    best: dict[str, Candidate] = {}
    for gap in gaps:
        if gap.budget <= 0 or not gap.queries:
            continue
        wanted = factor * gap.budget
        queries = list(dict.fromkeys(gap.queries))
        for query, vector in zip(queries, embed_texts(embedder, queries), strict=True):
            for hit in index.query(vector, wanted, exclude_ids=exclude):
                known = best.get(hit.sample_id)
                if known is None or hit.score > known.relevance:
                    best[hit.sample_id] = Candidate(
                        sample_id=hit.sample_id, gap=gap.skill, query=query, relevance=hit.score,
                        cluster=hit.cluster, vector=None if hit.vector is None else [float(x) for x in hit.vector],
                    )
    by_gap: dict[str, list[Candidate]] = {gap.skill: [] for gap in gaps}
    for candidate in best.values():
        by_gap[candidate.gap].append(candidate)
    wanted = {gap.skill: factor * gap.budget for gap in gaps}
    return {gap: sorted(cands, key=lambda c: (-c.relevance, c.sample_id))[: wanted[gap]] for gap, cands in by_gap.items()}


def random_selection(all_ids: Sequence[str], n: int, *, seed: int, round_number: int, exclude: frozenset[str]) -> list[str]:
    """The baseline every result is shown against: ``n`` ids uniformly from what was not trained on."""
    pool = [i for i in sorted(all_ids) if i not in exclude]
    rng = np.random.default_rng([seed, round_number])
    picked = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(picked)]


def known_replay(student: Student, samples: Sequence[Sample], image_root: Path | None, n: int, *,
                 matcher: str = DEFAULT_MATCHER, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[str]:
    """The first ``n`` ids of ``samples`` that ``student`` already answers right (in their order).

    Training on one new skill alone taught a small student to answer every question sharing its words
    with that skill's answer (side questions got colours); replaying what it knows keeps those skills,
    and skips pool samples whose answer it disputes (often the pool's wrong answers)."""
    if n <= 0 or not samples:
        return []
    records = evaluate(student, list(samples), image_root, matcher=matcher, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, progress=False).records
    return [r.id for r in records if r.correct][:n]
