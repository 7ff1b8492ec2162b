"""The peer selectors (`rds`: RDS+, `less`: LESS) in the whole loop on the tiny world."""

from __future__ import annotations

import re

import pytest

from tutorloop.agents.api import run
from tutorloop.agents.run_dir import SELECTED, RunDir
from tutorloop.agents.selectors.rds import space_name
from tutorloop.retrieval.index import PoolIndex

pytestmark = pytest.mark.integration


def _selected(out, round_number: int = 1) -> list[str]:
    return [r.sample.id for r in RunDir(out).read(round_number, SELECTED)]


def _space(world) -> PoolIndex:
    from tutorloop.agents.config import DEFAULT_COLLECTION

    return PoolIndex.open(store=world.store, collection=space_name(DEFAULT_COLLECTION, world.student))


def test_rds_represents_the_pool_once_per_student_and_picks_round_robin(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "a", selector="rds", rounds=2)
    run(config, run_id="rds-a")
    first, second = _selected(config.out, 1), _selected(config.out, 2)
    assert len(first) == len(second) == 6 and not set(first) & set(second), "round 2 excludes what round 1 trained"
    space = _space(tiny_world)
    try:
        manifest = space.manifest
        assert manifest.embedder.startswith("student:") and manifest.count == len(space.all_ids()) > 0
        made = space.manifest_path.stat().st_mtime_ns
    finally:
        space.close()
    why = RunDir(config.out).read(1, SELECTED)[0].why
    assert why.reason.startswith("rds: turn 1 of failure") and -1 <= why.relevance <= 1

    again = loop_config(tiny_world, tmp_path / "b", selector="rds", rounds=1, budget=6)
    run(again, run_id="rds-b")
    assert _selected(again.out, 1) == first, "the same student and seed choose the same samples"
    space = _space(tiny_world)
    try:
        assert space.manifest_path.stat().st_mtime_ns == made, "the pool's vectors were reused, not recomputed"
        space.manifest_path.unlink()  # as a kill after the last batch leaves it: every vector, no manifest
    finally:
        space.close()
    run(loop_config(tiny_world, tmp_path / "c", selector="rds", rounds=1, budget=6), run_id="rds-c")
    assert _selected(tmp_path / "c", 1) == first, "a resumed fill gives the same space"
    space = _space(tiny_world)
    try:
        assert space.manifest.count == len(space.all_ids())
        kept = space.manifest_path.read_text()
        space.manifest_path.write_text(kept.replace(space.manifest.embedder, "student:another"))
    finally:
        space.close()
    with pytest.raises(ValueError, match="holds vectors of student:another, not of the student"):
        run(loop_config(tiny_world, tmp_path / "d", selector="rds", rounds=1, budget=6), run_id="rds-d")
    space = _space(tiny_world)
    space.manifest_path.write_text(kept)  # the session's world is shared with other tests
    space.close()


def test_less_selects_by_gradient_similarity_within_its_shortlist(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="less", rounds=1,
                         less={"dim": 64, "warmup_samples": 16, "warmup_epochs": 1, "shortlist": 40})
    run(config, run_id="less")
    rows = RunDir(config.out).read(1, SELECTED)
    assert len(rows) == 12
    assert all(r.why.reason.startswith("less: mean gradient cosine") for r in rows)
    shortlisted = {int(re.search(r"of (\d+) shortlisted", r.why.reason)[1]) for r in rows}
    assert len(shortlisted) == 1 and 12 <= shortlisted.pop() <= 40, "a pool larger than the shortlist is shortlisted"
    seconds = RunDir(config.out).seconds(1)
    assert {"shortlist", "warm_up", "gradients"} <= seconds.keys(), "the selector's cost is recorded"


def test_round_robin_gives_each_failure_its_best_sample_not_taken_in_turn():
    from tutorloop.agents.selectors.rds import round_robin

    nearest = {"f1": iter([("a", 0.9), ("b", 0.8), ("c", 0.7)]), "f2": iter([("a", 0.95), ("d", 0.6)])}
    taken = {"c"}
    picks = round_robin(nearest, 4, taken)
    assert picks == [("a", "f1", 0.9, 1), ("d", "f2", 0.6, 1), ("b", "f1", 0.8, 2)], "f2's list ran out"
    assert taken == {"a", "b", "c", "d"}


def test_length_matched_random_draws_the_reference_lengths_in_the_loop(tiny_world, loop_config, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lab.selectors import LENGTH_MATCHED, length_matched, registered, text_length

    pool = PoolIndex.open(store=tiny_world.store)
    lengths = sorted(text_length(s) for s in pool.fetch(pool.all_ids()))
    pool.close()
    reference = lengths[:3] + lengths[-3:]  # the three shortest and the three longest the pool has
    with registered(length_matched(reference)):  # the run's config checks the name too
        config = loop_config(tiny_world, tmp_path / "run", selector=LENGTH_MATCHED, rounds=1, budget=6,
                             known_share=0.0)
        run(config, run_id="length-matched")
    rows = RunDir(config.out).read(1, SELECTED)
    assert sorted(text_length(r.sample) for r in rows) == sorted(reference)
