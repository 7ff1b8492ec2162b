"""Retrieval: each gap's queries against the pool index, as re-rank candidates; and the uniform draws.

A gap of share ``s`` keeps its ``factor * s`` most relevant candidates over all of its queries (each
query asks for that many: queries are often near-identical, so splitting the number between them
would return the same few samples). Samples already trained on are excluded in the query. A sample found by several gaps goes to the gap where it
is most relevant, so one sample is never counted twice.

A gap with skill-map skills (a grounded diagnosis) is searched hybrid: each query once restricted to the
gap's skills by payload filter (arm ``skill-map``) and once unrestricted (arm ``free-text``), all fused
by reciprocal rank (retrieval/fusion.py; a Qdrant server fuses with its query API). Its relevance is
then the RRF score, and each candidate records which arm(s) found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tutorloop.agents.planning import Gap
from tutorloop.retrieval.embed import embed_texts
from tutorloop.retrieval.index import Arm, PoolIndex
from tutorloop.retrieval.rerank import Candidate


class Embedder(Protocol):
    def encode(self, sentences: Sequence[str], **kwargs) -> np.ndarray: ...


ARM_MAP, ARM_FREE = "skill-map", "free-text"


def retrieve_candidates(
    gaps: Sequence[Gap], index: PoolIndex, embedder: Embedder, *, factor: int, exclude: frozenset[str]
) -> dict[str, list[Candidate]]:
    best: dict[str, Candidate] = {}
    for gap in gaps:
        if gap.budget <= 0 or not gap.queries:
            continue
        wanted = factor * gap.budget
        queries = list(dict.fromkeys(gap.queries))
        vectors = embed_texts(embedder, queries)
        found = _hybrid(gap, queries, vectors, index, wanted, exclude) if gap.skills else \
            [(hit, query, []) for query, vector in zip(queries, vectors, strict=True)
             for hit in index.query(vector, wanted, exclude_ids=exclude)]
        for hit, query, arms in found:
            known = best.get(hit.sample_id)
            if known is None or hit.score > known.relevance:
                best[hit.sample_id] = Candidate(
                    sample_id=hit.sample_id, gap=gap.skill, query=query, relevance=hit.score, arms=arms,
                    cluster=hit.cluster, vector=None if hit.vector is None else [float(x) for x in hit.vector],
                )
    by_gap: dict[str, list[Candidate]] = {gap.skill: [] for gap in gaps}
    for candidate in best.values():
        by_gap[candidate.gap].append(candidate)
    wanted = {gap.skill: factor * gap.budget for gap in gaps}
    return {gap: sorted(cands, key=lambda c: (-c.relevance, c.sample_id))[: wanted[gap]] for gap, cands in by_gap.items()}


def _hybrid(gap: Gap, queries: list[str], vectors: np.ndarray, index: PoolIndex, wanted: int,
            exclude: frozenset[str]) -> list[tuple]:
    """(fused hit, the first query that found it, its arms) for one gap's hybrid search."""
    arms = [Arm(f"{ARM_MAP}:{j}", v, tuple(gap.skills)) for j, v in enumerate(vectors)]
    arms += [Arm(f"{ARM_FREE}:{j}", v) for j, v in enumerate(vectors)]
    out = []
    for hit in index.hybrid_query(arms, wanted, exclude):
        kinds = [name.split(":")[0] for name in hit.arms]
        first = min(int(name.split(":")[1]) for name in hit.arms)
        out.append((hit, queries[first], [k for k in (ARM_MAP, ARM_FREE) if k in kinds]))
    return out


def random_selection(all_ids: Sequence[str], n: int, *, seed: int, round_number: int, exclude: frozenset[str]) -> list[str]:
    """The baseline every result is shown against: ``n`` ids uniformly from what was not trained on."""
    pool = [i for i in sorted(all_ids) if i not in exclude]
    rng = np.random.default_rng([seed, round_number])
    picked = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(picked)]
