"""`failures`: no teacher; the failed questions themselves are the queries, one gap per source."""

from __future__ import annotations

from collections.abc import Sequence

from tutorloop.agents.planning import gaps_from_failures
from tutorloop.agents.records import DiagnosisLog
from tutorloop.agents.selectors.base import Planned, RoundContext, Selector, choose_by_retrieval
from tutorloop.training.records import EvalRecord


def plan(ctx: RoundContext, failures: Sequence[EvalRecord], budget: int) -> Planned:
    with ctx.clock("diagnose"):
        # every failure is logged (undiagnosed) so a reviewer sees what each gap was made of
        return Planned(gaps=gaps_from_failures(failures, budget),
                       diagnoses=[DiagnosisLog.from_failure(r) for r in failures])


SELECTOR = Selector(
    name="failures", plan=plan, choose=choose_by_retrieval,
    help="no teacher: the failed validation questions are the queries (one gap per source)")
