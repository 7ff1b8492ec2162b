"""Fresh worlds from a seed (lab/worlds.py): drawn the same way every time, different between seeds, asked only
in words the student knows, and the tuning and held-out seeds kept apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.worlds import HELD_OUT_SEEDS, TUNING_SEEDS, build_fresh_world, draw_world, known_words  # noqa: E402
from tutorloop.demo.world import SKILLS, words  # noqa: E402


def test_a_seed_draws_one_world_and_seeds_differ():
    assert draw_world(101) == draw_world(101)
    worlds = [draw_world(s) for s in (*TUNING_SEEDS, *HELD_OUT_SEEDS)]
    assert len({(str(w.noise), tuple(t.name for t in w.targets)) for w in worlds}) == len(worlds)
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)


def test_targets_are_new_skills_asked_in_known_words():
    known = known_words()
    for seed in (*TUNING_SEEDS, *HELD_OUT_SEEDS):
        for target in draw_world(seed).targets:
            assert len(target.templates) >= 3
            for template in target.templates:
                filled = template.format(side="left", vpos="top", size="big")
                assert words(filled) <= known, f"{target.name}: {filled!r} has a word the student never saw"
            if target.kind == "reworded":
                assert not set(target.templates) & set(SKILLS[target.skill].templates)


def test_a_fresh_world_is_written_with_its_targets(tmp_path):
    world = draw_world(101, pool_size=120)
    paths = build_fresh_world(world, tmp_path, student=tmp_path / "student", n_val=6, n_test=6, n_generic_per_skill=2)
    pool = [json.loads(line) for line in paths.pool.read_text().splitlines()]
    assert len(pool) == 120
    for target in world.targets:
        val, test = paths.targets[target.name]
        questions = [json.loads(line)["conversations"][0]["value"] for line in test.read_text().splitlines()]
        assert len(questions) == 6 and all(q.startswith("<image>") for q in questions)
        assert len(val.read_text().splitlines()) == 6
