"""Known-skill replay: keep what the student knows while a round teaches it something new.

Two decisions, both the loop's (they apply to every selector):

- **Which samples it knows** — ``known_by_loss``: of a uniform draw from the pool, those on which the
  untouched student's loss on the reference answer is below a quantile of its loss over the draw. A loss,
  not an exact-match answer: on a free-form pool an exact match finds almost nothing, while the student's
  own likelihood of the reference says how well it already holds that answer. The quantile is over the
  draw (a uniform sample of the pool), so "known" is relative to this student on this pool; a pool
  sample with a wrong answer has a high loss and is never replayed.
- **How much to replay** — ``replay_share``: the configured share in round 1, then more after a round
  that forgot (generic accuracy below the student as given by more than the tolerance), less when it
  did not, within bounds. This follows the forgetting even from a configured share of 0: a run with a
  generic split whose round forgot replays a little next round (0.02 of the budget per point beyond the
  tolerance), which is how the selection benchmark's rows were measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tutorloop.agents.records import RoundMetrics
from tutorloop.agents.retrieve import random_selection
from tutorloop.retrieval.index import PoolIndex
from tutorloop.retrieval.records import Sample
from tutorloop.training.scores import answer_perplexity
from tutorloop.training.student import Student

FORGET_TOLERANCE = 1.0  # accuracy points of generic forgetting a round may cost before replay grows
SHARE_STEP = 0.02  # replay share added per point forgotten beyond the tolerance (0.1 for 5 points)
MAX_SHARE = 0.6  # never more than this of a round's budget: the round must still teach the target
MAX_SHARE_ON_TOP = 2.0  # on top of the budget: at most two known samples per selected one


@dataclass(frozen=True)
class KnownDraw:
    ids: list[str]  # in the draw's order
    drawn: int
    threshold: float  # the answer perplexity below which a sample counts as known

    def reason(self, wanted: int, quantile: float) -> str:
        return (f"replay: the untouched student's answer perplexity {self.threshold:.3g} or lower (the "
                f"{quantile:.0%} quantile over {self.drawn} samples drawn uniformly); {len(self.ids)} of "
                f"{wanted} wanted")


def known_by_loss(untouched: Student, samples: Sequence[Sample], image_root: Path | None, n: int, *,
                  quantile: float, seed: int, batch_size: int) -> KnownDraw:
    """Up to ``n`` of ``samples`` whose answer perplexity under ``untouched`` is at most the ``quantile``
    of theirs; a seeded draw among those (the lowest alone would replay only the easiest)."""
    if n <= 0 or not samples:
        return KnownDraw([], len(samples), float("nan"))
    ppl = answer_perplexity(untouched, samples, image_root, batch_size=batch_size)
    threshold = float(np.quantile(ppl, quantile))
    below = [i for i, value in enumerate(ppl) if value <= threshold]
    keep = sorted(np.random.default_rng(seed).permutation(below)[:n].tolist())
    return KnownDraw([samples[i].id for i in keep], len(samples), threshold)


def draw_known(untouched: Student, index: PoolIndex, image_root: Path | None, n: int, *, quantile: float, seed: int,
               round_number: int, exclude: frozenset[str], batch_size: int) -> KnownDraw:
    """``n`` known samples judged on a uniform draw of twice the size the quantile needs (so the ``n`` are a
    random pick among the known, not all of them)."""
    if n <= 0:
        return KnownDraw([], 0, float("nan"))
    drawn = random_selection(index.all_ids(), math.ceil(2 * n / quantile), seed=seed, round_number=round_number,
                             exclude=exclude)
    return known_by_loss(untouched, index.fetch(drawn), image_root, n, quantile=quantile,
                         seed=seed + round_number, batch_size=batch_size)


def replay_share(base: float, history: Sequence[RoundMetrics], previous_share: float | None, *,
                 cap: float = MAX_SHARE) -> tuple[float, str]:
    """The round's replay share and why: ``base`` at first; then the previous share moved by the forgetting
    the last round measured on the generic split (points below the student as given)."""
    if previous_share is None or len(history) < 2:
        return base, f"configured share {base:.2f}"
    before, after = history[0].retention_accuracy, history[-1].retention_accuracy
    if before is None or after is None:
        return previous_share, "no generic split or probe to measure forgetting: share kept"
    forgot = 100 * (before - after)
    share = min(cap, max(base, previous_share + SHARE_STEP * (forgot - FORGET_TOLERANCE)))
    return share, (f"retention {100 * before:.1f} → {100 * after:.1f} % ({forgot:+.1f} points forgotten; tolerance "
                   f"{FORGET_TOLERANCE:g}): share {previous_share:.3f} → {share:.3f}")
