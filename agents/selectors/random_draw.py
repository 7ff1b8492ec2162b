"""`random`: the budget drawn uniformly from the pool — the baseline every result is shown against.

It plans no gaps and retrieves nothing: the draw is its whole choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from tutorloop.agents.planning import GapPlan
from tutorloop.agents.selectors.base import Choice, Planned, RoundContext, Selector
from tutorloop.retrieval.rerank import ScoredCandidate
from tutorloop.training.records import EvalRecord


def plan(ctx: RoundContext, failures: Sequence[EvalRecord], budget: int) -> Planned:
    return Planned()


def uniform_choice(all_ids: Sequence[str], n: int, *, seed: int, round_number: int,
                   exclude: frozenset[str]) -> list[ScoredCandidate]:
    from tutorloop.agents.retrieve import random_selection  # here: the CLI lists selectors before torch loads

    ids = random_selection(all_ids, n, seed=seed, round_number=round_number, exclude=exclude)
    return [ScoredCandidate(sample_id=i, gap="random", query="", relevance=0.0, score=0.0, selected=True,
                            reason=f"uniform draw (seed {seed}, round {round_number})") for i in ids]


def choose(ctx: RoundContext, plan: GapPlan) -> Choice:
    with ctx.clock("draw"):
        return Choice(scored=uniform_choice(ctx.services.pool_index().all_ids(), plan.for_gaps,
                                            seed=ctx.config.seed, round_number=ctx.number, exclude=ctx.exclude))


SELECTOR = Selector(name="random", plan=plan, choose=choose,
                    help="the same budget drawn uniformly from the pool (the baseline)")
