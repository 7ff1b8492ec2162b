"""The demo student: cached by key, built atomically, its per-skill report written; the real build is slow."""

from __future__ import annotations

import json

import pytest

from tutorloop.demo.student import FIRST_CONVERGED, THREE_EPOCHS, PretrainSettings, build_student, student_key
from tutorloop.demo.targets import TARGETS
from tutorloop.demo.world import GENERIC_SKILLS, POOL_SKILLS, SKILLS

TINY = PretrainSettings(n_train=32, batch_size=16, epochs=1, n_eval_per_skill=2)


def test_key_depends_on_seed_and_settings():
    assert student_key(0, TINY) == student_key(0, PretrainSettings(**TINY.model_dump()))
    assert student_key(0, TINY) != student_key(1, TINY)
    assert student_key(0, TINY) != student_key(0, TINY.model_copy(update={"lr": 1e-4}))
    assert student_key(0, TINY) != student_key(0, TINY.model_copy(update={"position_init": "random"}))
    assert student_key(0, TINY) != student_key(0, TINY.model_copy(update={"skill_weights": {"side": 2.0}}))


def test_fields_added_later_keep_an_old_students_key():
    # The committed benchmark rows stand on this key (3 epochs, random position init, equal shares): a
    # field added since must not rename that cached student.
    assert student_key(0, FIRST_CONVERGED) == "eef750345035"
    assert student_key(0, THREE_EPOCHS) == "6608026a2cba"  # the replay curve's student (stop 12)
    assert student_key(0, PretrainSettings()) == "0cc80cd0b8ec", "the default student's key (README) changed"


def test_tiny_build_is_cached_and_reports_every_skill(tmp_path):
    from tutorloop.training.student import load_student

    path = build_student(tmp_path, seed=0, settings=TINY, progress=False)
    report = json.loads((path / "skills.json").read_text())
    acc = report["accuracy"]
    assert set(acc["generic"]) == {SKILLS[s].source for s in GENERIC_SKILLS}
    assert set(acc["pool_only"]) == {SKILLS[s].source for s in POOL_SKILLS} - set(acc["generic"])
    assert set(acc["targets"]) == set(TARGETS)
    assert report["train"]["steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no build folder left behind"
    stamp = (path / "skills.json").stat().st_mtime_ns
    assert build_student(tmp_path, seed=0, settings=TINY, progress=False) == path
    assert (path / "skills.json").stat().st_mtime_ns == stamp
    student = load_student(path, device="cpu")
    assert student.tokenizer.unk_token_id not in student.tokenizer("the shape in the top half is what colour?")["input_ids"]


def test_build_does_not_depend_on_the_callers_thread_count(tmp_path):
    import torch
    from safetensors.torch import load_file

    before = torch.get_num_threads()
    built = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        built.append(load_file(build_student(tmp_path / f"t{threads}", seed=0, settings=TINY, progress=False)
                               / "model.safetensors"))
        assert torch.get_num_threads() == threads, "the caller's thread count is restored"
    torch.set_num_threads(before)
    assert built[0].keys() == built[1].keys()
    assert all(torch.equal(built[0][k], built[1][k]) for k in built[0])


# The bars a built demo student must clear on any machine (issue 14). Counting 1-4 shapes stays the
# weakest skill of a 3M model trained for minutes; its bar is what it reaches with margin, not 0.9.
COUNT_BAR = 0.5  # measured 0.68 on both kernel paths after the default pre-training (README)
SKILL_BARS = {"colour": 0.9, "size": 0.9, "side": 0.9, "vertical": 0.9, "count": COUNT_BAR}


@pytest.mark.slow
def test_pretrained_student_is_good_at_generic_skills_and_weak_on_targets(tmp_path_factory):
    path = build_student(tmp_path_factory.mktemp("students"), seed=0, progress=False)
    acc = json.loads((path / "skills.json").read_text())["accuracy"]
    missed = {skill: acc["generic"][SKILLS[skill].source] for skill, bar in SKILL_BARS.items()
              if acc["generic"][SKILLS[skill].source] < bar}
    assert not missed, f"generic skills under their bars {SKILL_BARS}: {missed}"
    for name, target_acc in acc["targets"].items():
        assert target_acc <= 0.65, (name, target_acc)


def test_the_shipped_student_is_used_without_pre_training(tmp_path):
    """The default demo student ships with the package: the demo starts from its weights, not 15+ CPU minutes."""
    import time

    from tutorloop.demo.student import SHIPPED, build_student

    start = time.perf_counter()
    folder = build_student(tmp_path)
    assert time.perf_counter() - start < 10
    assert (SHIPPED / folder.name).is_dir()
    assert (folder / "model.safetensors").read_bytes() == (SHIPPED / folder.name / "model.safetensors").read_bytes()
