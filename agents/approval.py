"""A person in the loop: a round's plan is approved, edited or left waiting before its data is bought.

With ``approve: true`` the select node previews what each gap would buy (the candidates, scored, nothing
selected) and stops the graph with a LangGraph interrupt; ``tutorloop approve RUNDIR`` records the decision
(``approval.json``: who, when, what changed, a note), applies its edits to the round's ``gaps.json`` and resumes
the run, whose select node then chooses on the edited plan. A round already decided is never asked again.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from tutorloop.agents.planning import GapPlan


class Approval(BaseModel):
    """``approval.json`` of a round: the decision on its plan."""

    round: int
    status: Literal["approved", "edited"]
    by: str
    at: str
    dropped: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    added_queries: dict[str, list[str]] = Field(default_factory=dict)
    budgets_before: dict[str, int] = Field(default_factory=dict)
    budgets_after: dict[str, int] = Field(default_factory=dict)
    note: str = ""


class ApprovalError(ValueError):
    pass


def edit_plan(plan: GapPlan, *, drop: list[str], weights: dict[str, float],
              queries: dict[str, list[str]] | None = None) -> GapPlan:
    """The plan without the ``drop`` gaps, with the ``weights`` gaps' shares scaled and ``queries`` added to their
    gaps; the gaps' total budget is kept (shared in proportion to the edited budgets, largest remainders first,
    ties in plan order)."""
    queries = queries or {}
    names = [gap.skill for gap in plan.gaps]
    unknown = sorted((set(drop) | set(weights) | set(queries)) - set(names))
    if unknown:
        raise ApprovalError(f"no gap named {', '.join(unknown)} in round's plan; its gaps: {', '.join(names)}")
    kept = [gap for gap in plan.gaps if gap.skill not in drop]
    if not kept and plan.gaps:
        raise ApprovalError("every gap dropped: nothing left to buy (approve fewer drops, or stop the run)")
    total = sum(gap.budget for gap in plan.gaps)
    wanted = [gap.budget * weights.get(gap.skill, 1.0) for gap in kept]
    scale = total / sum(wanted) if sum(wanted) > 0 else 0.0
    budgets = [int(w * scale) for w in wanted]
    order = sorted(range(len(kept)), key=lambda i: (-(wanted[i] * scale - budgets[i]), i))
    for i in order[: total - sum(budgets)]:
        budgets[i] += 1
    return plan.model_copy(update={"gaps": [
        g.model_copy(update={"budget": b, "queries": [*g.queries, *queries.get(g.skill, [])]})
        for g, b in zip(kept, budgets, strict=True)]})


def decide(number: int, plan: GapPlan, *, drop: list[str], weights: dict[str, float], note: str,
           queries: dict[str, list[str]] | None = None) -> tuple[GapPlan, Approval]:
    edited = edit_plan(plan, drop=drop, weights=weights, queries=queries)
    before = {g.skill: g.budget for g in plan.gaps}
    after = {g.skill: g.budget for g in edited.gaps}
    approval = Approval(round=number, status="edited" if (drop or weights or queries) else "approved",
                        by=getpass.getuser(), at=datetime.now(UTC).isoformat(timespec="seconds"), dropped=sorted(drop),
                        weights=weights, added_queries=queries or {}, budgets_before=before, budgets_after=after,
                        note=note)
    return edited, approval
