"""The digits world (demo/digits.py): real scans, disjoint pool and evaluation scans, a target the pool
never phrases, answers that follow from the digit."""

from __future__ import annotations

import json

from tutorloop.demo.digits import (
    PHRASINGS,
    POOL_SHARE,
    TARGET,
    TARGET_PHRASINGS,
    answer,
    build_digits_world,
    scans,
)
from tutorloop.retrieval.ingest import load_samples


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_world_is_valid_and_evaluates_on_scans_the_pool_never_shows(tmp_path):
    world = build_digits_world(tmp_path / "w", pool_size=400, n_val=40, n_test=60, n_generic=30, with_student=False)
    pool = load_samples(world.pool, world.image_root)
    assert len(pool) == 400  # every record is accepted
    val, test = world.targets[TARGET]
    assert len(load_samples(val)) == 40 and len(load_samples(test)) == 60 and len(load_samples(world.generic)) == 30
    n_pool_scans = int(POOL_SHARE * len(scans()[1]))

    def scan_ids(path):
        return {int(r["image"].split("-")[1].split(".")[0]) for r in _records(path) if "image" in r}

    assert max(scan_ids(world.pool)) < n_pool_scans <= min(scan_ids(val) | scan_ids(test) | scan_ids(world.generic))
    assert not scan_ids(val) & scan_ids(test)
    pool_questions = {r["conversations"][0]["value"].split("\n")[-1] for r in _records(world.pool)}
    target_questions = {r["conversations"][0]["value"].split("\n")[-1] for r in _records(test)}
    assert target_questions <= set(TARGET_PHRASINGS) and not target_questions & pool_questions
    sources = {r["source"] for r in _records(world.pool)}
    assert sources == {f"{s}-v1" for s in PHRASINGS} | {"misc-v1"}


def test_answers_follow_from_the_digit_and_wrong_answers_are_marked(tmp_path):
    world = build_digits_world(tmp_path / "w", pool_size=400, n_val=10, n_test=10, n_generic=10, with_student=False)
    _, labels = scans()
    for r in _records(world.pool):
        if "image" not in r:
            continue
        digit = int(labels[int(r["image"].split("-")[1].split(".")[0])])
        reply = r["conversations"][1]["value"]
        truth = answer(r["source"].removesuffix("-v1"), digit)
        assert (reply == truth) == ("noise" not in r), r
    assert answer("after", 9) is None and answer("before", 0) is None and answer("parity", 4) == "even"
