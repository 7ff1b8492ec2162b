"""What a selector is: plan a round's gaps from the student's failures, then choose samples for the plan.

A selector is a pair of functions with a name (agents/selectors/__init__.py keeps the registry). Both get
a `RoundContext`, the round's inputs: its number, the config, the services (pool index, embedder, student),
the ids already trained on, and a clock that times named stages into the round's ``seconds.json``. Neither
reads or writes the run directory: the loop's nodes (agents/nodes.py) do, around them. The budget split
between the gaps and known-skill replay is the loop's too, so replay applies to any selector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tutorloop.agents.planning import Gap, GapPlan
from tutorloop.agents.records import DiagnosisLog
from tutorloop.retrieval.rerank import Candidate, ScoredCandidate
from tutorloop.training.records import EvalRecord

if TYPE_CHECKING:
    from tutorloop.agents.config import RunConfig
    from tutorloop.agents.runtime import Runtime
    from tutorloop.training.student import Student


@dataclass
class RoundContext:
    number: int  # the round being built (1 = the first training round)
    config: RunConfig
    services: Runtime
    exclude: frozenset[str]  # ids trained on in earlier rounds
    clock: Callable[[str], AbstractContextManager]  # ``with clock("retrieve"): ...`` times a stage
    teacher_cache: Path | None = None

    def student(self) -> Student:
        """The student as it enters this round (the previous round's adapter)."""
        return self.services.student(self.services.run_dir.adapter(self.number - 1))


@dataclass
class Planned:
    gaps: list[Gap] = field(default_factory=list)
    diagnoses: list[DiagnosisLog] = field(default_factory=list)  # one row per failure looked at
    teacher: dict | None = None  # the teacher's cost (agents/teacher.py DiagnoseResult, without the logs)


@dataclass
class Choice:
    scored: list[ScoredCandidate]  # selected and not selected, each with its reason
    candidates: list[Candidate] = field(default_factory=list)  # what retrieval found, when it ran

    @property
    def chosen(self) -> list[ScoredCandidate]:
        return [c for c in self.scored if c.selected]


PlanFn = Callable[[RoundContext, Sequence[EvalRecord], int], Planned]
ChooseFn = Callable[[RoundContext, GapPlan], Choice]


@dataclass(frozen=True)
class Selector:
    name: str
    help: str  # one line, shown by `tutorloop run --help`
    plan: PlanFn  # (context, failures, the gaps' budget) -> gaps (+ diagnoses)
    choose: ChooseFn  # (context, the plan) -> scored candidates
    needs_teacher: bool = False


def choose_by_retrieval(ctx: RoundContext, plan: GapPlan) -> Choice:
    """Each gap's queries against the pool index, then the re-rank: the choice of `teacher` and `failures`."""
    from tutorloop.agents.retrieve import retrieve_candidates
    from tutorloop.agents.stages import rerank_for_student

    with ctx.clock("retrieve"):
        by_gap = retrieve_candidates(plan.gaps, ctx.services.pool_index(), ctx.services.query_embedder(),
                                     factor=ctx.config.candidates_factor, exclude=ctx.exclude)
    with ctx.clock("rerank"):
        shares = {gap.skill: gap.budget for gap in plan.gaps}
        scored = rerank_for_student(by_gap, shares, ctx.config.rerank, ctx.student, ctx.services.pool_index(),
                                    ctx.services.pool_image_root, seed=ctx.config.seed + ctx.number)
    return Choice(scored=scored, candidates=[c for cands in by_gap.values() for c in cands])
