"""Answer matchers: what a VQA user counts as the same answer, and what they do not."""

from __future__ import annotations

import pytest

from tutorloop.training.matching import (
    MATCHERS,
    choice_letter,
    get_matcher,
    match_exact,
    match_vqa,
    normalize,
    parse_options,
)

QUESTION = "What colour is the car?\nA. red\nB. dark blue\nC. green"


@pytest.mark.parametrize(("prediction", "reference"), [
    ("Red", "red"), ("  red. ", "red"), ("the red", "red"), ("A red", "red"), ("RED!", "red"),
    ("three", "3"), ("3", "Three"), ("zero", "0"), ("twelve", "12"),
    ("Yes", "yes"), ("yeah", "yes"), ("True", "yes"), ("nope", "no"), ("No.", "no"),
    ("3.5", "3.5"), ("1,000", "1000"),
    ("dark  blue", "Dark blue"), ("left-hand", "left hand"),
])
def test_vqa_accepts(prediction, reference):
    assert match_vqa(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), [
    ("red", "blue"), ("3", "4"), ("yes", "no"), ("", "red"), ("35", "3.5"), ("red car", "red"),
    ("no", "yes"), ("blue", "b"),
])
def test_vqa_rejects(prediction, reference):
    assert not match_vqa(prediction, reference)


@pytest.mark.parametrize("prediction", ["B", "(B)", "B.", "b", "B) dark blue", "Option B", "The answer is (b)",
                                        "answer: B", "dark blue"])
def test_choice_letter_reference(prediction):
    assert match_vqa(prediction, "B", QUESTION)
    assert match_vqa(prediction, "(B)", QUESTION)


@pytest.mark.parametrize("prediction", ["A", "(C)", "green", "C."])
def test_choice_letter_wrong(prediction):
    assert not match_vqa(prediction, "B", QUESTION)


def test_letter_prediction_against_option_text_reference():
    assert match_vqa("(B)", "dark blue", QUESTION)
    assert not match_vqa("(A)", "dark blue", QUESTION)
    assert not match_vqa("(B)", "dark blue", "What colour is the car?")  # no options listed: no mapping


def test_article_a_is_not_option_a():
    assert choice_letter("a red car") is None
    assert choice_letter("(A) red") == "A"
    assert choice_letter("blue") is None


def test_parse_options_inline_and_lines():
    assert parse_options("Pick one: (A) cat (B) dog (C) bird") == {"A": "cat", "B": "dog", "C": "bird"}
    assert parse_options(QUESTION) == {"A": "red", "B": "dark blue", "C": "green"}


def test_normalize():
    assert normalize("  The THREE red Cars! ") == "3 red cars"
    assert normalize("Yep") == "yes"


def test_exact_is_strict_but_strips():
    assert match_exact(" red ", "red")
    assert not match_exact("Red", "red")


def test_registry():
    assert set(MATCHERS) >= {"vqa", "exact"}
    assert get_matcher("vqa") is match_vqa
    with pytest.raises(ValueError, match="unknown matcher"):
        get_matcher("fuzzy")
