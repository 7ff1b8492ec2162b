"""Planning: the teacher's diagnoses become gaps, and each gap gets a share of the round's budget.

A gap is one missing skill: diagnoses whose skill names are the same after normalisation, or nearly
the same ("counting" / "counting-objects", "color-recognition" / "colour-identification"), are merged.
Each gap keeps its failures' ids and its search queries (deduplicated, most asked first) and gets a
share of the budget proportional to its errors, after a floor for every gap; shares are whole numbers
that add up to the budget exactly (largest-remainder rounding). Everything is deterministic: the same
diagnoses give the same gaps in the same order.

A grounded diagnosis (its skills chosen from the pool's skill map, agents/skills.py) needs no name
matching: each of its up to 3 map skills is a gap of that name, retrieval is restricted to it by payload
filter (``Gap.skills``), and the budget follows the summed weights — a composite failure split 0.5/0.5
between two parts gives each half an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from pydantic import BaseModel, Field

from tutorloop.agents.records import Diagnosis
from tutorloop.retrieval.records import strip_image_tag
from tutorloop.training.records import EvalRecord

# Words that say nothing about *which* skill: "color-recognition" and "color-identification" are one gap.
GENERIC_WORDS = frozenset({
    "recognition", "recognizing", "recognising", "identification", "identifying", "detection", "detecting",
    "understanding", "reasoning", "perception", "skill", "skills", "ability", "task", "questions", "question",
    "the", "of", "and", "in", "on", "a", "an", "to",
})
SPELLINGS = {"colour": "color", "grey": "gray", "centre": "center"}
SIMILAR_RATIO = 0.85  # difflib ratio above which two skill names are one (typos, inflections)


class Gap(BaseModel):
    skill: str
    aliases: list[str] = Field(default_factory=list, description="other skill names merged into this gap")
    n_errors: int
    queries: list[str]
    sample_ids: list[str] = Field(default_factory=list)
    budget: int = Field(0, description="samples this gap may select this round")
    skills: list[str] = Field(default_factory=list, description="skill-map skills retrieval is restricted to "
                              "(the hybrid search's filtered arm); empty: the queries alone")
    weight: float | None = Field(None, description="summed diagnosis weights (grounded gaps); the budget "
                                 "follows it instead of n_errors")


class GapPlan(BaseModel):
    """``gaps.json`` of a round: its budget, the share kept for known-skill replay, and the gaps."""

    budget: int = Field(description="samples the round may select in all")
    known: int = Field(0, description="replay of skills the untouched student has: of the budget, or on top of it "
                       "(known_on_top)")
    known_ids: list[str] = Field(default_factory=list, description="the replayed samples (agents/retention.py)")
    known_share: float = Field(0.0, description="the replay share asked for this round (the unfilled part went "
                                                "to the gaps)")
    known_reason: str = Field("", description="how the share was chosen and which samples count as known")
    known_on_top: bool = False
    gaps: list[Gap] = Field(default_factory=list)

    @property
    def for_gaps(self) -> int:
        """What the selector fills: the round's budget, less the replay when it comes out of it."""
        return self.budget if self.known_on_top else self.budget - self.known
    teacher: dict[str, Any] | None = Field(None, description="the teacher's cost this round: requests, replies "
                                           "ok/rejected/cached, tokens, seconds (None without a teacher)")


# --- skill names ----------------------------------------------------------------------------------


def _stem(word: str) -> str:
    word = SPELLINGS.get(word, word)
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    return SPELLINGS.get(word, word)


def skill_tokens(skill: str) -> frozenset[str]:
    words = [w for w in skill.split("-") if w]
    content = [w for w in words if w not in GENERIC_WORDS]
    return frozenset(_stem(w) for w in content or words)


def skill_key(skill: str) -> tuple[str, ...]:
    """The content words of a skill name in order, spelling and inflection aside: the skill map merges
    clusters whose names have the same key ("colour-of-shapes" = "color-of-shape"), but not reorderings
    ("size-colour" asks a colour by size, "colour-size" a size by colour)."""
    words = [w for w in skill.split("-") if w]
    content = [w for w in words if w not in GENERIC_WORDS]
    return tuple(_stem(w) for w in content or words)


def similar_skills(a: str, b: str) -> bool:
    """Same gap: half the content words shared, or nearly the same spelling of the content words."""
    ta, tb = skill_tokens(a), skill_tokens(b)
    if ta and tb and len(ta & tb) / len(ta | tb) >= 0.5:
        return True
    return SequenceMatcher(None, "-".join(sorted(ta)), "-".join(sorted(tb))).ratio() >= SIMILAR_RATIO


def group_skills(skills: Sequence[str]) -> dict[str, str]:
    """Map every skill name to its gap's name: the most frequent name of the group (ties: alphabetical).

    A name joins the first group whose *leading* name it resembles (no chaining: "shape-colors" joining
    "color" must not pull "shape" in after it).
    """
    counts = Counter(skills)
    groups: list[list[str]] = []
    for skill in sorted(counts, key=lambda s: (-counts[s], s)):
        home = next((g for g in groups if similar_skills(skill, g[0])), None)
        if home is None:
            groups.append([skill])
        else:
            home.append(skill)
    return {member: group[0] for group in groups for member in group}


# --- queries and budget ---------------------------------------------------------------------------


def dedupe_queries(queries: Sequence[str], limit: int | None = None) -> list[str]:
    """Case/space-insensitive dedup; the most repeated first, then first seen; at most ``limit``."""
    first: dict[str, tuple[int, str]] = {}
    counts: Counter[str] = Counter()
    for i, query in enumerate(queries):
        text = " ".join(query.split())
        key = text.casefold()
        if not key:
            continue
        counts[key] += 1
        first.setdefault(key, (i, text))
    ordered = sorted(first, key=lambda k: (-counts[k], first[k][0]))
    return [first[k][1] for k in ordered[:limit]]


def allocate(weights: Sequence[int], budget: int, floor: int = 1) -> list[int]:
    """Whole shares summing to ``budget``: ``floor`` each, the rest in proportion to ``weights``.

    When the budget cannot pay every floor, the first gaps (the caller orders them by errors) get it.
    Remainders go by largest fraction, ties to the earlier gap, so the result is deterministic.
    """
    if budget < 0 or floor < 0:
        raise ValueError(f"budget and floor must be >= 0, got budget={budget}, floor={floor}")
    n = len(weights)
    if n == 0:
        return []
    if floor * n >= budget:
        shares, left = [], budget
        for _ in weights:
            shares.append(min(floor, left))
            left -= shares[-1]
        return shares
    rest, total = budget - floor * n, sum(weights)
    if total <= 0:
        weights, total = [1] * n, n
    shares = [floor + rest * w // total for w in weights]
    by_fraction = sorted(range(n), key=lambda i: (-(rest * weights[i] % total), i))
    for i in by_fraction[: budget - sum(shares)]:
        shares[i] += 1
    return shares


def _weight(gap: Gap) -> float:
    return gap.n_errors if gap.weight is None else gap.weight


def _with_budgets(gaps: list[Gap], budget: int, floor: int) -> list[Gap]:
    gaps = sorted(gaps, key=lambda g: (-_weight(g), g.skill))
    # allocate works in whole numbers: weights in thousandths keep a 0.5/0.5 split exact
    weights = [round(1000 * _weight(g)) for g in gaps]
    for gap, share in zip(gaps, allocate(weights, budget, floor), strict=True):
        gap.budget = share
    return gaps


# --- entry points ---------------------------------------------------------------------------------


def plan_gaps(
    diagnoses: Sequence[Diagnosis],
    budget: int,
    *,
    floor: int = 1,
    sample_ids: Sequence[str] | None = None,
    questions: Sequence[str] | None = None,
    max_queries: int = 10,
) -> list[Gap]:
    """Gaps from diagnoses (``sample_ids``/``questions`` run parallel to them when given).

    The failed ``questions``, when given, are added as queries after the teacher's own.
    """
    for name, values in (("sample_ids", sample_ids), ("questions", questions)):
        if values is not None and len(values) != len(diagnoses):
            raise ValueError(f"{name} has {len(values)} entries for {len(diagnoses)} diagnoses")
    # grounded diagnoses: one gap per map skill, with the diagnosis' weight for it
    mapped: dict[str, list[tuple[int, float]]] = {}
    for i, diagnosis in enumerate(diagnoses):
        for chosen in diagnosis.skills:
            mapped.setdefault(chosen.skill, []).append((i, chosen.weight))
    free = [i for i, d in enumerate(diagnoses) if not d.skills]
    home = group_skills([diagnoses[i].missing_skill for i in free])
    members: dict[str, list[int]] = {}
    for i in free:
        members.setdefault(home[diagnoses[i].missing_skill], []).append(i)

    def queries_of(indices: list[int]) -> list[str]:
        queries = [q for i in indices for q in diagnoses[i].queries]
        if questions is not None:
            queries += [strip_image_tag(questions[i]) for i in indices]
        return dedupe_queries(queries, max_queries)

    def ids_of(indices: list[int]) -> list[str]:
        return [sample_ids[i] for i in indices] if sample_ids is not None else []

    gaps = []
    for skill, weighted in mapped.items():
        indices = [i for i, _ in weighted] + members.pop(skill, [])  # a free name equal to a map skill joins it
        gaps.append(Gap(skill=skill, n_errors=len(indices), queries=queries_of(indices), sample_ids=ids_of(indices),
                        skills=[skill], weight=round(sum(w for _, w in weighted) + len(indices) - len(weighted), 4)))
    for skill, indices in members.items():
        gaps.append(Gap(
            skill=skill,
            aliases=sorted({diagnoses[i].missing_skill for i in indices} - {skill}),
            n_errors=len(indices),
            queries=queries_of(indices),
            sample_ids=ids_of(indices),
        ))
    if mapped and members:  # mixed plan: free gaps weigh their errors like grounded ones their weights
        for gap in gaps:
            if gap.weight is None:
                gap.weight = float(gap.n_errors)
    return _with_budgets(gaps, budget, floor)


def gaps_from_failures(records: Sequence[EvalRecord], budget: int, *, floor: int = 1) -> list[Gap]:
    """``--selector failures`` (no teacher): each failed question is a query; one gap per source."""
    by_source: dict[str, list[EvalRecord]] = {}
    for record in records:
        if not record.correct:
            by_source.setdefault(record.source or "unknown", []).append(record)
    gaps = [
        Gap(skill=source, n_errors=len(failed), sample_ids=[r.id for r in failed],
            queries=dedupe_queries([strip_image_tag(r.question) for r in failed]))
        for source, failed in by_source.items()
    ]
    return _with_budgets(gaps, budget, floor)
