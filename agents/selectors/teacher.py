"""`teacher`: the teacher diagnoses a seeded sample of the failures; its diagnoses become the gaps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.planning import plan_gaps
from agents.selectors.base import Planned, RoundContext, Selector, choose_by_retrieval
from agents.teacher import TeacherConfig, diagnose_failures
from training.records import EvalRecord


def sample_failures(failures: Sequence[EvalRecord], n: int, *, seed: int) -> list[EvalRecord]:
    """At most ``n`` failures, drawn without replacement by ``seed``, in their original order."""
    if len(failures) <= n:
        return list(failures)
    keep = sorted(np.random.default_rng(seed).choice(len(failures), size=n, replace=False))
    return [failures[i] for i in keep]


def diagnose_into_gaps(failures: Sequence[EvalRecord], budget: int, teacher: TeacherConfig,
                       image_root: Path) -> Planned:
    """Diagnose every failure given; the diagnosed ones become gaps sharing ``budget``."""
    result = diagnose_failures(list(failures), image_root, teacher)
    diagnosed = [row for row in result.logs if row.diagnosis]
    # the failed questions join the teacher's queries: a weak teacher's skill names alone can miss
    gaps = plan_gaps([row.diagnosis for row in diagnosed], budget, sample_ids=[row.sample_id for row in diagnosed],
                     questions=[row.question for row in diagnosed])
    return Planned(gaps=gaps, diagnoses=result.logs, teacher=result.model_dump(exclude={"logs"}))


def plan(ctx: RoundContext, failures: Sequence[EvalRecord], budget: int) -> Planned:
    config = ctx.config
    asked = sample_failures(failures, config.max_diagnoses, seed=config.seed + ctx.number)
    # replies are cached (by default in the run directory), so a resumed round does not pay for them twice
    teacher = config.teacher if config.teacher.cache_dir or ctx.teacher_cache is None else \
        config.teacher.model_copy(update={"cache_dir": ctx.teacher_cache})
    with ctx.clock("diagnose"):
        return diagnose_into_gaps(asked, budget, teacher, config.image_root_of(config.val))


SELECTOR = Selector(
    name="teacher", plan=plan, choose=choose_by_retrieval, needs_teacher=True,
    help="the teacher diagnoses each failure (erroneous step, missing skill, queries); the gaps drive retrieval")
