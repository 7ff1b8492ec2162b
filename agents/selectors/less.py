"""`less`: LESS (Xia et al., 2024) — the pool samples whose gradient most lowers the loss of a gap's failures.

Each round: a warm-up LoRA on the untouched student trains briefly on a seeded draw of the pool; at its
weights every shortlisted pool sample gets an Adam-preconditioned, randomly projected gradient feature and
every failure a plain one (training/gradients.py). A pool sample's score for a gap is its mean cosine to the
gap's failures; each gap, the largest share first, takes its best samples not taken. Failures are grouped
into gaps by source, as `failures` does.

A gradient per pool sample is the whole cost, so only a shortlist is featurised: the whole pool when it
holds at most ``less.shortlist`` samples, else that many found by text retrieval with the failed questions.
"""

from __future__ import annotations

import logging
import random

import numpy as np

from tutorloop.agents.planning import GapPlan
from tutorloop.agents.selectors.base import Choice, RoundContext, Selector
from tutorloop.agents.selectors.failures import plan as plan_by_source
from tutorloop.agents.selectors.rds import failure_samples
from tutorloop.retrieval.rerank import ScoredCandidate

log = logging.getLogger(__name__)


def shortlist(ctx: RoundContext, plan: GapPlan, free: list[str], size: int) -> list[str]:
    """The pool samples to featurise: every one not trained on (``free``), or ``size`` retrieved by the failed
    questions."""
    pool = ctx.services.pool_index()
    if len(free) <= size:
        return free
    from tutorloop.agents.retrieve import retrieve_candidates

    factor = max(1, size // max(1, sum(g.budget for g in plan.gaps)))
    by_gap = retrieve_candidates(plan.gaps, pool, ctx.services.query_embedder(), factor=factor, exclude=ctx.exclude)
    ranked = sorted((c for cands in by_gap.values() for c in cands), key=lambda c: (-c.relevance, c.sample_id))
    return sorted(dict.fromkeys(c.sample_id for c in ranked[:size]))  # the most relevant, in a stable order


def warmup_draw(ctx: RoundContext, free: list[str], n: int) -> list[str]:
    return sorted(random.Random(ctx.config.seed * 7919 + ctx.number).sample(free, min(n, len(free))))


def choose(ctx: RoundContext, plan: GapPlan) -> Choice:
    from tutorloop.training.gradients import gradient_features, warm_up
    from tutorloop.training.student import load_student

    config, settings = ctx.config, ctx.config.less.model_copy(update={"seed": ctx.config.seed + ctx.number})
    pool, pool_root = ctx.services.pool_index(), ctx.services.pool_image_root
    with ctx.clock("shortlist"):
        free = [i for i in pool.all_ids() if i not in ctx.exclude]  # one scroll of the pool for both draws
        ids = shortlist(ctx, plan, free, settings.shortlist)
    with ctx.clock("warm_up"):
        student = load_student(config.student)
        moments = warm_up(student, pool.fetch(warmup_draw(ctx, free, settings.warmup_samples)), pool_root, settings)
    with ctx.clock("gradients"):
        features = gradient_features(student, pool.fetch(ids), pool_root, settings, moments=moments,
                                     progress=True, desc="less: pool gradients")  # TQDM_DISABLE=1 silences it
        by_gap = failure_samples(ctx, plan)
        targets = {gap: gradient_features(student, failed, config.image_root_of(config.val), settings)
                   for gap, failed in by_gap.items() if failed}
    del student
    taken: set[str] = set()
    scored: list[ScoredCandidate] = []
    for gap in sorted(plan.gaps, key=lambda g: (-g.budget, g.skill)):
        if gap.skill not in targets or gap.budget <= 0:
            continue
        scores = (features @ targets[gap.skill].T).mean(axis=1)
        picked = 0
        for i in np.argsort(-scores, kind="stable"):
            if picked >= gap.budget:
                break
            if ids[i] in taken:
                continue
            taken.add(ids[i])
            picked += 1
            scored.append(ScoredCandidate(
                sample_id=ids[i], gap=gap.skill, query="", relevance=float(scores[i]), score=float(scores[i]),
                selected=True, reason=f"less: mean gradient cosine {scores[i]:.3f} to the gap's "
                                      f"{len(by_gap[gap.skill])} failure(s), rank {picked} of {len(ids)} shortlisted"))
    log.info("less: %d samples chosen from a shortlist of %d", len(scored), len(ids))
    return Choice(scored=scored)


SELECTOR = Selector(
    name="less", plan=plan_by_source, choose=choose,
    help="LESS: no teacher; the pool samples whose LoRA gradient (a short warm-up adapter, Adam-preconditioned, "
         "randomly projected) is most like the failures' (only a shortlist of less.shortlist samples, found by "
         "the failed questions, on a larger pool)")
