"""The demo student: cached by key, built atomically, its per-skill report written; the real build is slow."""

from __future__ import annotations

import json

import pytest

from demo.student import PretrainSettings, build_student, student_key
from demo.targets import TARGETS
from demo.world import GENERIC_SKILLS, SKILLS

TINY = PretrainSettings(n_train=32, batch_size=16, epochs=1, n_eval_per_skill=2)


def test_key_depends_on_seed_and_settings():
    assert student_key(0, TINY) == student_key(0, PretrainSettings(**TINY.model_dump()))
    assert student_key(0, TINY) != student_key(1, TINY)
    assert student_key(0, TINY) != student_key(0, TINY.model_copy(update={"lr": 1e-4}))


def test_tiny_build_is_cached_and_reports_every_skill(tmp_path):
    from training.student import load_student

    path = build_student(tmp_path, seed=0, settings=TINY, progress=False)
    report = json.loads((path / "skills.json").read_text())
    acc = report["accuracy"]
    assert set(acc["generic"]) == {SKILLS[s].source for s in GENERIC_SKILLS}
    assert set(acc["pool_only"]) == {s.source for s in SKILLS.values()} - set(acc["generic"])
    assert set(acc["targets"]) == set(TARGETS)
    assert report["train"]["steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no build folder left behind"
    stamp = (path / "skills.json").stat().st_mtime_ns
    assert build_student(tmp_path, seed=0, settings=TINY, progress=False) == path
    assert (path / "skills.json").stat().st_mtime_ns == stamp
    student = load_student(path, device="cpu")
    assert student.tokenizer.unk_token_id not in student.tokenizer("the shape in the top half is what colour?")["input_ids"]


@pytest.mark.slow
def test_pretrained_student_is_good_at_generic_skills_and_weak_on_targets(tmp_path_factory):
    path = build_student(tmp_path_factory.mktemp("students"), seed=0, progress=False)
    acc = json.loads((path / "skills.json").read_text())["accuracy"]
    for skill in ("colour", "size", "side", "vertical"):
        assert acc["generic"][SKILLS[skill].source] >= 0.9, (skill, acc["generic"])
    for name, target_acc in acc["targets"].items():
        assert target_acc <= 0.65, (name, target_acc)
