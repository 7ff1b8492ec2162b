"""`teacher`: the teacher diagnoses a seeded sample of the failures; its diagnoses become the gaps.

With a skill map of the pool (``skills.json`` beside the index, agents/skills.py) the diagnoses are
grounded: each failure's prompt lists the map's skills nearest to it and the teacher must choose among
them (a JSON-schema enum), so every gap names a skill the pool has and retrieval searches within it as
well as by the free-text queries (agents/retrieve.py). Without a map it diagnoses freely, as before;
either way the plan says which (``gaps.json`` → ``teacher.skill_map``) and the log line does too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tutorloop.agents.planning import plan_gaps
from tutorloop.agents.selectors.base import Planned, RoundContext, Selector, choose_by_retrieval
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.training.records import EvalRecord

if TYPE_CHECKING:
    from tutorloop.agents.teacher import ChoicesFn

log = logging.getLogger(__name__)


def sample_failures(failures: Sequence[EvalRecord], n: int, *, seed: int) -> list[EvalRecord]:
    """At most ``n`` failures, drawn without replacement by ``seed``, in their original order."""
    if len(failures) <= n:
        return list(failures)
    keep = sorted(np.random.default_rng(seed).choice(len(failures), size=n, replace=False))
    return [failures[i] for i in keep]


def diagnose_into_gaps(failures: Sequence[EvalRecord], budget: int, teacher: TeacherConfig,
                       image_root: Path, choices: ChoicesFn | None = None) -> Planned:
    """Diagnose every failure given (grounded in ``choices`` when given); the diagnosed ones become gaps
    sharing ``budget``."""
    from tutorloop.agents.teacher import diagnose_failures  # here: listing the selectors must not load openai

    result = diagnose_failures(list(failures), image_root, teacher, choices)
    diagnosed = [row for row in result.logs if row.diagnosis]
    # the failed questions join the teacher's queries: a weak teacher's skill names alone can miss
    gaps = plan_gaps([row.diagnosis for row in diagnosed], budget, sample_ids=[row.sample_id for row in diagnosed],
                     questions=[row.question for row in diagnosed])
    return Planned(gaps=gaps, diagnoses=result.logs, teacher=result.model_dump(exclude={"logs"}))


def map_choices(ctx: RoundContext, asked: Sequence[EvalRecord]) -> tuple[ChoicesFn | None, dict]:
    """The skill map's choices per failure, or None (free diagnoses), and the map's status for the plan."""
    from tutorloop.agents.skills import MapGrounding, open_map

    config = ctx.config
    index = ctx.services.pool_index()
    skill_map, status = open_map(config.teacher.skill_map, index, config.store, config.collection, config.qdrant_url)
    if skill_map is None:
        log.info("teacher: no skill map used (%s)", status.reason)
        return None, status.as_dict()
    log.info("teacher: diagnoses grounded in the skill map %s (%s)", status.path, status.reason)
    grounding = MapGrounding(skill_map, index, ctx.services.query_embedder(), shown=config.teacher.map_skills_shown)
    table = grounding.choices_for(list(asked))
    return (lambda record: table[record.id]), {**status.as_dict(), "build_cost": skill_map.cost.model_dump()}


def plan(ctx: RoundContext, failures: Sequence[EvalRecord], budget: int) -> Planned:
    config = ctx.config
    asked = sample_failures(failures, config.max_diagnoses, seed=config.seed + ctx.number)
    # replies are cached (by default in the run directory), so a resumed round does not pay for them twice
    teacher = config.teacher if config.teacher.cache_dir or ctx.teacher_cache is None else \
        config.teacher.model_copy(update={"cache_dir": ctx.teacher_cache})
    with ctx.clock("diagnose"):
        choices, status = map_choices(ctx, asked)
        planned = diagnose_into_gaps(asked, budget, teacher, config.image_root_of(config.val), choices)
    diagnosed = sum(row.diagnosis is not None for row in planned.diagnoses)
    unanswered = sum(row.transport for row in planned.diagnoses)
    if asked and (not diagnosed or unanswered > (1 - teacher.min_diagnosed) * len(asked)):
        reasons = Counter((row.error or "no reply").split(":", 1)[0] for row in planned.diagnoses if not row.diagnosis)
        raise TeacherFailed(
            f"round {ctx.number}: the teacher at {teacher.base_url} diagnosed {diagnosed} of the {len(asked)} failures "
            f"sent ({unanswered} unanswered; " + ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
            + "); the round stopped before selecting. Resume with: tutorloop run --out "
            f"{config.out} once the teacher answers (replies already valid are cached)")
    planned.teacher = {**(planned.teacher or {}), "skill_map": status, "failures": len(failures),
                       "sent": len(asked)}
    return planned


class TeacherFailed(RuntimeError):
    """Every diagnosis of a round was rejected: training on replay alone would be a silent non-result."""


SELECTOR = Selector(
    name="teacher", plan=plan, choose=choose_by_retrieval, needs_teacher=True,
    help="the teacher diagnoses each failure (erroneous step, missing skills — chosen from the pool's skill map "
         "when skills.json is beside the index — and queries); the gaps drive retrieval")
