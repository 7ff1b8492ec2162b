"""Selectors only the lab runs: baselines the literature asks for that no user would pick.

``length_matched`` is random at equal budget *and* equal lengths: longer samples alone can teach more, so
a selector that prefers them should beat this row, not only the uniform draw (Nayak et al. 2602.14696). It
is registered for one run at a time (``registered``) under a name of its own; the product's registry is
otherwise untouched.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tutorloop.agents.planning import GapPlan
from tutorloop.agents.selectors import SELECTORS
from tutorloop.agents.selectors.base import Choice, RoundContext, Selector
from tutorloop.agents.selectors.random_draw import plan
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import ScoredCandidate

LENGTH_MATCHED = "random-length"


def text_length(sample: Sample) -> int:
    """Characters of every turn, the image tag left out: what varies between samples of one image size."""
    return sum(len(turn.value.replace("<image>", "").strip()) for turn in sample.conversations)


def match_lengths(lengths: dict[str, int], wanted: Sequence[int], rng: random.Random) -> list[str]:
    """For each wanted length, a uniform draw among the not-yet-chosen ids of that length, or of the nearest
    length that has any left (ties between a shorter and a longer one broken by the draw)."""
    by_length: dict[int, list[str]] = defaultdict(list)
    for sample_id, n in lengths.items():
        by_length[n].append(sample_id)
    chosen = []
    for want in wanted:
        if not by_length:
            break
        nearest = min(abs(n - want) for n in by_length)
        bucket_key = rng.choice(sorted(n for n in by_length if abs(n - want) == nearest))
        bucket = by_length[bucket_key]
        chosen.append(bucket.pop(rng.randrange(len(bucket))))
        if not bucket:
            del by_length[bucket_key]
    return chosen


def length_matched(reference: Sequence[int]) -> Selector:
    """Random draws whose text lengths match ``reference`` (the lengths another selector chose), one each;
    a round that wants more than ``reference`` holds draws uniformly for the rest."""

    def choose(ctx: RoundContext, plan: GapPlan) -> Choice:
        with ctx.clock("draw"):
            index = ctx.services.pool_index()
            ids = [i for i in index.all_ids() if i not in ctx.exclude]
            lengths = {s.id: text_length(s) for s in index.fetch(ids)}
            rng = random.Random(f"{ctx.config.seed}-{ctx.number}")
            wanted = list(reference)[: plan.for_gaps]
            wanted += [rng.choice(list(reference)) for _ in range(plan.for_gaps - len(wanted))]
            picked = match_lengths(lengths, wanted, rng)
        return Choice(scored=[ScoredCandidate(sample_id=i, gap="random", query="", relevance=0.0, score=0.0,
                                              selected=True, reason=f"draw of length {lengths[i]}")
                              for i in picked])

    return Selector(name=LENGTH_MATCHED, plan=plan, choose=choose,
                    help="random at equal budget and equal text lengths (lab baseline)")


@contextmanager
def registered(selector: Selector) -> Iterator[None]:
    """``selector`` is a name ``tutorloop run`` accepts while the block runs (in this process)."""
    SELECTORS[selector.name] = selector
    try:
        yield
    finally:
        SELECTORS.pop(selector.name, None)
