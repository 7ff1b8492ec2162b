"""Evaluation: the accuracy of a student with known answers equals the hand-computed value."""

from __future__ import annotations

import pytest

from tutorloop.training.evaluate import evaluate, make_record, split_answer, summarize
from tutorloop.training.matching import match_vqa
from tutorloop.training.student import load_student

from ..conftest import COLOURS, make_sample


def _relabel(sample, reference, source):
    return make_sample(sample.id, sample.image, sample.question, reference, source)


def test_accuracy_equals_hand_computed_value(colour_llava, tiny_data):
    student = load_student(colour_llava, device="cpu")
    # Precondition: the pre-trained student names every colour right.
    assert evaluate(student, tiny_data.samples, tiny_data.root, progress=False).summary["accuracy"] == 1.0

    colours = list(COLOURS)
    picked = tiny_data.samples[:8]
    truth = [s.reference for s in picked]
    wrong = lambda c: colours[(colours.index(c) + 1) % 4]  # noqa: E731
    references = [truth[0], truth[1], wrong(truth[2]), f"The {truth[3].upper()}!",  # source "x": 3 of 4 right
                  wrong(truth[4]), wrong(truth[5]), truth[6], f" {truth[7]}. "]     # source "y": 2 of 4 right
    fixed = [_relabel(s, r, "x" if i < 4 else "y") for i, (s, r) in enumerate(zip(picked, references, strict=True))]

    result = evaluate(student, fixed, tiny_data.root, batch_size=3, progress=False)
    assert result.summary == {"accuracy": 5 / 8, "n": 8, "by_source": {
        "x": {"accuracy": 0.75, "n": 4, "correct": 3}, "y": {"accuracy": 0.5, "n": 4, "correct": 2}}}
    assert [r.correct for r in result.records] == [True, True, False, True, False, False, True, True]
    assert [r.prediction for r in result.records] == truth
    assert [r.id for r in result.records] == [s.id for s in fixed]

    exact = evaluate(student, fixed, tiny_data.root, matcher="exact", progress=False)
    assert exact.summary["accuracy"] == 3 / 8  # "The RED!" and " green. " only pass the vqa matcher


def test_batch_size_does_not_change_predictions(colour_llava, tiny_data):
    student = load_student(colour_llava, device="cpu")
    one = evaluate(student, tiny_data.samples[:6], tiny_data.root, batch_size=1, progress=False)
    many = evaluate(student, tiny_data.samples[:6], tiny_data.root, batch_size=4, progress=False)
    assert [r.prediction for r in one.records] == [r.prediction for r in many.records]


def test_untrained_students_evaluate_with_consistent_accounting(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    samples = tiny_data.samples[:5] + tiny_data.yes_no[:4]
    result = evaluate(student, samples, tiny_data.root, batch_size=4, max_new_tokens=4, progress=False)
    assert len(result.records) == result.summary["n"] == 9
    assert result.summary["accuracy"] == sum(r.correct for r in result.records) / 9
    assert sum(v["n"] for v in result.summary["by_source"].values()) == 9
    assert set(result.summary["by_source"]) == {"colour", "colour_check"}


def test_text_only_sample_is_evaluated(colour_llava, tiny_data):
    student = load_student(colour_llava, device="cpu")
    text_only = make_sample("t-1", None, "What colour is the shape?", "red", "text")
    result = evaluate(student, [text_only, tiny_data.samples[0]], tiny_data.root, progress=False)
    assert result.summary["n"] == 2 and result.records[0].image is None


@pytest.mark.parametrize(("output", "steps", "answer"), [
    ("red", [], "red"),
    ("Step 1: the shape is round. Step 2: it is filled red. Answer: red",
     ["the shape is round.", "it is filled red.", "Answer: red"], "red"),
    ("There is one shape.\nIts colour is red.\nAnswer: red",
     ["There is one shape.", "Its colour is red.", "Answer: red"], "red"),
    ("The shape is a circle. It is red. Final answer: red", ["The shape is a circle.", "It is red.", "Answer: red"], "red"),
    ("1. look at the shape\n2. it is blue", ["look at the shape", "it is blue"], "it is blue"),
    ("answer : blue", [], "blue"),
    ("The answer is blue.", [], "blue."),
    ("It is round. So the answer is blue", ["It is round.", "Answer: blue"], "blue"),
])
def test_split_answer(output, steps, answer):
    assert split_answer(output) == (steps, answer)


def test_reasoning_record_matches_the_final_answer_only(tiny_data):
    sample = tiny_data.samples[0]  # reference "red"
    record = make_record(sample, "Step 1: it looks blue at first. Step 2: no, it is red. Answer: Red.", match_vqa)
    assert record.correct and record.prediction == "Red." and len(record.steps) == 3
    assert record.output.startswith("Step 1")
    wrong = make_record(sample, "Step 1: it is red. Answer: blue", match_vqa)
    assert not wrong.correct


def test_summarize_empty():
    assert summarize([]) == {"accuracy": 0.0, "n": 0, "by_source": {}}
