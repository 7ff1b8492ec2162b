"""Targets: splits with disjoint ids, answers from scenes, new wording made of words the student knows."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tutorloop.demo.targets import TARGETS, skill_of_question, target_texts, write_target
from tutorloop.demo.world import GENERIC_SKILLS, SKILLS, render_all, words
from tutorloop.demo.world import skill_of_question as skill_of_pool_question
from tutorloop.retrieval.records import strip_image_tag


def test_targets_are_outside_the_generic_skills():
    assert len(TARGETS) >= 2
    for target in TARGETS.values():
        assert not set(target.skills) & set(GENERIC_SKILLS), target.name


def test_splits_are_disjoint_and_correct(tmp_path, oracle, read_jsonl):
    for name in TARGETS:
        val, test = write_target(name, tmp_path, seed=0, n_val=40, n_test=60)
        val_records, test_records = read_jsonl(val), read_jsonl(test)
        assert (len(val_records), len(test_records)) == (40, 60)
        assert not {r["id"] for r in val_records} & {r["id"] for r in test_records}
        assert not {r["image"] for r in val_records} & {r["image"] for r in test_records}
        for record in val_records + test_records:
            assert record["conversations"][-1]["value"] == oracle(record)
            assert (val.parent / record["image"]).is_file()


def test_same_seed_same_files(tmp_path):
    a, _ = write_target("side-colour", tmp_path / "a", seed=1, n_val=20, n_test=20)
    b, _ = write_target("side-colour", tmp_path / "b", seed=1, n_val=20, n_test=20)
    assert a.read_bytes() == b.read_bytes()


def test_reworded_target_uses_new_phrasings_of_known_words():
    generic_words = set()
    for skill in GENERIC_SKILLS:
        for template in SKILLS[skill].templates:
            generic_words |= set().union(*(words(t) for t in render_all(template)))
    reworded = [t for t in TARGETS.values() if t.templates]
    assert reworded, "at least one target asks in wording the pool does not use"
    for target in reworded:
        for skill, phrasings in target.templates.items():
            assert not set(phrasings) & set(SKILLS[skill].templates)
            for template in phrasings:
                for text in render_all(template):
                    assert words(text) <= generic_words, (target.name, text)
    for target in TARGETS.values():  # answers are words the student already gives
        for skill in target.skills:
            generic_answers = {a for g in GENERIC_SKILLS for a in SKILLS[g].answers}
            assert set(SKILLS[skill].answers) <= generic_answers


def test_every_target_question_is_read_back_as_its_skill(tmp_path, read_jsonl):
    """The oracle teacher and the benchmark's "diagnosed skill right" read a failure's skill from its words:
    a target's own phrasings must be read back too (the pool's readback does not know them)."""
    for name in TARGETS:
        val, _ = write_target(name, tmp_path, seed=0, n_val=40, n_test=1)
        for record in read_jsonl(val):
            question = strip_image_tag(record["conversations"][0]["value"])
            assert skill_of_question(question) == record["source"].removesuffix("-v1"), (name, question)
    choice = TARGETS["side-colour-choice"].phrasings("side_colour")[0].format(side="left")
    assert skill_of_pool_question(choice) is None and skill_of_question(choice) == "side_colour"


def test_later_targets_leave_the_tokenizer_corpus_alone():
    """Token ids follow word frequency, so a new target's phrasings in the corpus would change the student one
    cache key names; only the first reworded target's phrasings were ever in it."""
    assert target_texts() == list(TARGETS["vertical-colour-reworded"].templates["vertical_colour"])
    assert {"side-colour-choice", "corner-colour-choice"} <= set(TARGETS)


def test_choice_wording_leads_a_text_search_to_the_side_skill(small_pool, read_jsonl):
    """What the "-choice" targets are for: the failed questions as queries (the `failures` selector) find the
    side skill the student already has, not the colour-by-place samples it needs; only a diagnosis that
    names the skill leads there. Pinned with the shipped MiniLM over a real pool (cosine, the 10 nearest of 2,000)."""
    from tutorloop.retrieval.embed import embed_texts, load_embedder

    records = read_jsonl(small_pool)
    questions = [strip_image_tag(r["conversations"][0]["value"]) for r in records]
    embedder = load_embedder()
    pool = embed_texts(embedder, questions)
    for name in ("side-colour-choice", "corner-colour-choice"):
        target = TARGETS[name]
        asked = [q for template in target.phrasings(target.skills[0]) for q in render_all(template)]
        nearest = np.argsort(-(embed_texts(embedder, asked) @ pool.T), axis=1)[:, :10]
        sources = Counter(records[i]["source"] for i in nearest.ravel())
        assert sources["side-v1"] / nearest.size >= 0.9, (name, sources.most_common(3))
        needed = {f"{s}-v1" for s in SKILLS[target.skills[0]].taught_by}
        assert sum(sources[s] for s in needed) / nearest.size <= 0.05, (name, sources.most_common(3))
