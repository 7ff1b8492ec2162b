"""build_world: every part where WorldPaths says, reused when unchanged, rebuilt when its settings change."""

from __future__ import annotations

import pytest

from tutorloop.demo.build import build_world
from tutorloop.demo.world import GENERIC_SKILLS
from tutorloop.retrieval.ingest import load_samples


def test_build_world_is_idempotent_and_rebuilds_what_changed(tmp_path):
    kwargs = dict(seed=0, n_val=20, n_test=30, n_generic_per_skill=5, with_student=False, progress=False)
    world = build_world(tmp_path, pool_size=300, **kwargs)
    assert len(load_samples(world.pool, world.image_root)) == 300
    assert len(load_samples(world.generic)) == 5 * len(GENERIC_SKILLS)
    for val, test in world.targets.values():
        assert len(load_samples(val)) == 20 and len(load_samples(test)) == 30
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.jsonl")}

    again = build_world(tmp_path, pool_size=300, **kwargs)
    assert again == world
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.jsonl")} == stamps

    bigger = build_world(tmp_path, pool_size=400, **kwargs)
    assert len(load_samples(bigger.pool)) == 400
    assert bigger.generic.stat().st_mtime_ns == stamps[world.generic]  # other parts untouched
    on_disk = {f"images/{p.name}" for p in (tmp_path / "pool" / "images").iterdir()}
    referenced = {s.image for s in load_samples(bigger.pool) if s.image}
    assert on_disk == referenced, "the old pool's images were removed"


def test_build_world_rejects_unknown_targets(tmp_path):
    with pytest.raises(ValueError, match="unknown targets"):
        build_world(tmp_path, pool_size=100, targets=["nope"], with_student=False, progress=False)
