"""The pool: deterministic, every answer follows from its scene, the mess in the stated proportions."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tutorloop.demo.pool import CLEAN, OFF_TOPIC_SOURCE, NoiseConfig, write_clean, write_pool
from tutorloop.demo.world import COLOURS, OFF_TOPIC, POOL_SKILLS, SKILLS, Scene
from tutorloop.retrieval.ingest import load_samples


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_pool(tmp_path / "a", 300, seed=3, progress=False)
    b = write_pool(tmp_path / "b", 300, seed=3, progress=False)
    c = write_pool(tmp_path / "c", 300, seed=4, progress=False)
    assert _digest(a.parent) == _digest(b.parent)
    assert a.read_bytes() != c.read_bytes()


def test_records_load_as_samples_with_unique_ids(small_pool):
    samples = load_samples(small_pool)
    assert len(samples) == 2000
    assert len({s.id for s in samples}) == 2000


def test_every_clean_answer_follows_from_its_scene(small_pool, oracle, read_jsonl):
    for record in read_jsonl(small_pool):
        if record["source"] == OFF_TOPIC_SOURCE:
            continue
        truth = oracle(record)
        if record.get("noise") == "wrong_answer":
            assert record["true_answer"] == truth and record["conversations"][-1]["value"] != truth
        else:
            assert record["conversations"][-1]["value"] == truth, record


def test_images_show_their_scenes(small_pool, read_jsonl):
    root = small_pool.parent
    for record in read_jsonl(small_pool)[:400]:
        if "scene" not in record:
            continue
        pixels = Image.open(root / record["image"]).convert("RGB").load()
        for shape in Scene.from_dict(record["scene"]).shapes:
            assert pixels[shape.x, shape.y] == COLOURS[shape.colour]


def test_mess_in_expected_proportions(small_pool, read_jsonl):
    records = read_jsonl(small_pool)
    noise = Counter(r.get("noise") for r in records)
    default = NoiseConfig()
    assert noise["near_duplicate"] == round(2000 * default.near_duplicate)
    assert noise["wrong_answer"] == round(2000 * default.wrong_answer)
    assert noise["off_topic"] == round(2000 * default.off_topic)
    by_id = {r["id"]: r for r in records}
    for r in records:
        if r.get("noise") == "near_duplicate":
            orig = by_id[r["duplicate_of"]]
            assert orig["source"] == r["source"] and orig["slots"] == r["slots"]
            same_image = orig["image"] == r["image"]
            moved = [abs(a["x"] - b["x"]) + abs(a["y"] - b["y"])
                     for a, b in zip(orig["scene"]["shapes"], r["scene"]["shapes"], strict=True)]
            assert (same_image and max(moved) == 0) or (not same_image and max(moved) == 1)
            assert not same_image or orig["conversations"][0]["value"] != r["conversations"][0]["value"]
        if r.get("noise") == "off_topic":
            assert r["source"] == OFF_TOPIC_SOURCE
            question = r["conversations"][0]["value"].replace("<image>\n", "")
            assert (question, r["conversations"][-1]["value"]) in OFF_TOPIC
    assert any("image" not in r for r in records), "some off-topic samples are text-only"


def test_skills_share_the_clean_samples_and_images(small_pool, read_jsonl):
    records = [r for r in read_jsonl(small_pool) if "noise" not in r]
    per_skill = Counter(r["source"] for r in records)
    assert set(per_skill) == {SKILLS[s].source for s in POOL_SKILLS}
    assert max(per_skill.values()) - min(per_skill.values()) <= 0.35 * min(per_skill.values())
    assert len({r["image"] for r in records}) < 0.8 * len(records), "images are shared across questions"
    for skill in ("exist", "compare"):
        answers = Counter(r["conversations"][-1]["value"] for r in records if r["source"] == f"{skill}-v1")
        assert min(answers.values()) > 0.35 * sum(answers.values()), (skill, answers)


def test_restricted_skills_and_no_noise(tmp_path, read_jsonl):
    path = write_pool(tmp_path, 200, seed=0, skills=["colour", "count"], noise=CLEAN, progress=False)
    records = read_jsonl(path)
    assert {r["source"] for r in records} == {"colour-v1", "count-v1"}
    assert all("noise" not in r for r in records)


def test_clean_set_has_n_per_skill(tmp_path, oracle, read_jsonl):
    path = write_clean(tmp_path / "generic.jsonl", ["shape", "side"], 20, seed=0)
    records = read_jsonl(path)
    assert Counter(r["source"] for r in records) == {"shape-v1": 20, "side-v1": 20}
    assert all(r["conversations"][-1]["value"] == oracle(r) for r in records)


def test_skill_weights_set_the_clean_shares(tmp_path, read_jsonl):
    path = write_pool(tmp_path, 400, seed=0, skills=["colour", "side", "count"], noise=CLEAN, progress=False,
                      weights={"side": 2.0})
    shares = Counter(r["source"] for r in read_jsonl(path))
    assert shares == {"colour-v1": 100, "side-v1": 200, "count-v1": 100}


def test_equal_weights_write_the_same_pool_as_none(tmp_path):
    a = write_pool(tmp_path / "a", 301, seed=5, skills=["colour", "side", "count"], progress=False)
    b = write_pool(tmp_path / "b", 301, seed=5, skills=["colour", "side", "count"], progress=False,
                   weights={"colour": 1.0, "side": 1.0})
    assert _digest(a.parent) == _digest(b.parent)


def test_weights_for_skills_not_written_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not written"):
        write_pool(tmp_path, 50, seed=0, skills=["colour"], progress=False, weights={"side": 2.0})
    with pytest.raises(ValueError, match="positive"):
        write_pool(tmp_path, 50, seed=0, skills=["colour", "side"], progress=False, weights={"side": 0.0})
