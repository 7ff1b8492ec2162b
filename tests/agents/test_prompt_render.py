"""The prompt renderer fails loudly and never expands dataset text."""

from __future__ import annotations

import pytest

from tutorloop.prompts.render import PromptError, data_tag, placeholders, render

FIELDS = {"image_note": "n", "tag": "T", "question": "q", "reference": "r", "prediction": "p", "steps": "s"}


def test_renders_every_field():
    text = render("diagnose_user", **FIELDS)
    assert "<<<DATA question T>>>\nq\n<<<END T>>>" in text
    assert placeholders("diagnose_user") == set(FIELDS)
    assert placeholders("diagnose_system") == set()


def test_missing_field_is_an_error_naming_it():
    with pytest.raises(PromptError, match="missing field.*question"):
        render("diagnose_user", **{k: v for k, v in FIELDS.items() if k != "question"})


def test_unknown_field_and_unknown_template_are_errors():
    with pytest.raises(PromptError, match="unknown field.*questoin"):
        render("diagnose_user", **FIELDS, questoin="x")
    with pytest.raises(PromptError, match="no prompt template 'nope'"):
        render("nope")


def test_values_are_not_expanded_again():
    text = render("diagnose_user", **{**FIELDS, "question": "$reference {prediction} $$"})
    assert "$reference {prediction} $$" in text


def test_data_tag_avoids_every_candidate_present_in_the_text():
    assert data_tag("a", "b") == data_tag("a", "b") and data_tag("a") != data_tag("b")  # reproducible
    hex_digits = "0123456789ABCDEF"
    assert data_tag(hex_digits.replace("7", ""), length=1) == "7"  # the only one-character tag left
    with pytest.raises(PromptError):
        data_tag(hex_digits, length=1)
