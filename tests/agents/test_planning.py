"""Planning: gaps from diagnoses, near-duplicate skills merged, budget shares that add up exactly."""

from __future__ import annotations

import random

import pytest

from tutorloop.agents.planning import (
    Gap,
    allocate,
    dedupe_queries,
    gaps_from_failures,
    group_skills,
    plan_gaps,
)
from tutorloop.agents.records import Diagnosis


def diag(skill: str, *queries: str) -> Diagnosis:
    return Diagnosis(erroneous_step=None, error_type="perception", missing_skill=skill, explanation="x",
                     queries=list(queries) or [f"{skill} question"])


@pytest.mark.parametrize("seed", range(40))
def test_allocate_sums_exactly_and_respects_the_floor(seed):
    rng = random.Random(seed)
    weights = [rng.randint(1, 30) for _ in range(rng.randint(1, 12))]
    floor = rng.randint(0, 5)
    budget = rng.randint(floor * len(weights), 500)
    shares = allocate(weights, budget, floor)
    assert sum(shares) == budget and all(s >= floor for s in shares)
    # proportional beyond the floor: no share is more than one sample off its exact quota
    rest, total = budget - floor * len(weights), sum(weights)
    assert all(abs(s - floor - rest * w / total) < 1 for s, w in zip(shares, weights, strict=True))


def test_allocate_when_the_budget_cannot_pay_every_floor():
    assert allocate([9, 5, 1], 2, floor=1) == [1, 1, 0]
    assert allocate([9, 5, 1], 5, floor=2) == [2, 2, 1]
    assert allocate([3, 2], 0) == [0, 0] and allocate([], 10) == []
    with pytest.raises(ValueError):
        allocate([1], -1)


def test_allocate_breaks_ties_deterministically():
    assert allocate([1, 1, 1], 10, floor=0) == [4, 3, 3]
    assert allocate([1, 1, 1], 11, floor=0) == [4, 4, 3]


def test_near_duplicate_skill_names_are_one_gap_without_chaining():
    names = ["counting", "counting-objects", "object-counting", "count-objects", "color-recognition",
             "colour-identification", "shape-colors", "shape-recognition", "spatial-relations"]
    home = group_skills(names)
    assert len({home[n] for n in ("counting", "counting-objects", "object-counting", "count-objects")}) == 1
    assert home["colour-identification"] == home["color-recognition"]
    assert home["shape-recognition"] != home["color-recognition"]  # "shape-colors" must not bridge them
    assert home["spatial-relations"] not in {home["counting"], home["color-recognition"]}


def test_plan_gaps_groups_keeps_queries_and_ids_and_splits_the_budget():
    diagnoses = [diag("object-counting", "how many circles", "count the squares"),
                 diag("Counting Objects", "How many  circles"),
                 diag("counting", "how many stars"),
                 diag("color-recognition", "what color is the ball"),
                 diag("spatial-relations", "is the circle left of the square")]
    ids = [f"val-{i}" for i in range(5)]
    gaps = plan_gaps(diagnoses, 20, floor=2, sample_ids=ids)

    assert [g.skill for g in gaps] == ["counting", "color-recognition", "spatial-relations"]  # ties: alphabetical
    counting = gaps[0]
    assert counting.n_errors == 3 and counting.sample_ids == ["val-0", "val-1", "val-2"]
    assert counting.aliases == ["counting-objects", "object-counting"]
    assert counting.queries == ["how many circles", "count the squares", "how many stars"]  # deduped, most asked first
    assert sum(g.budget for g in gaps) == 20 and all(g.budget >= 2 for g in gaps)
    assert counting.budget > gaps[1].budget
    assert sum(g.n_errors for g in gaps) == len(diagnoses)


def test_plan_gaps_is_deterministic_under_input_order():
    diagnoses = [diag(s) for s in ["a-skill", "counting", "color", "counting-objects", "colour", "shape"] * 3]
    reference = [(g.skill, g.budget, g.n_errors) for g in plan_gaps(diagnoses, 17)]
    for seed in range(5):
        shuffled = diagnoses[:]
        random.Random(seed).shuffle(shuffled)
        assert [(g.skill, g.budget, g.n_errors) for g in plan_gaps(shuffled, 17)] == reference


def test_plan_gaps_adds_failed_questions_and_checks_lengths():
    gaps = plan_gaps([diag("counting", "how many circles")], 5, questions=["<image>\nHow many stars are there?"])
    assert gaps[0].queries == ["how many circles", "How many stars are there?"]
    with pytest.raises(ValueError, match="sample_ids has 2 entries for 1"):
        plan_gaps([diag("counting")], 5, sample_ids=["a", "b"])
    assert plan_gaps([], 10) == []


def test_dedupe_queries_caps_and_orders():
    assert dedupe_queries(["b", "a", "A ", "c", "a"], limit=2) == ["a", "b"]
    assert dedupe_queries(["", "  "]) == []


def test_gaps_from_failures_one_gap_per_source(make_failure):
    records = [make_failure(i, source="counting") for i in range(3)]
    records += [make_failure(10, source="colors", question="<image>\nWhat color is it?")]
    records += [make_failure(11, source="colors", question="What color is it?")]
    gaps = gaps_from_failures(records, 9)
    assert [(g.skill, g.n_errors) for g in gaps] == [("counting", 3), ("colors", 2)]
    assert gaps[1].queries == ["What color is it?"] and gaps[1].sample_ids == ["val-010", "val-011"]
    assert sum(g.budget for g in gaps) == 9
    assert all(Gap.model_validate(g.model_dump()) == g for g in gaps)  # round-trips through gaps.json
