"""The Diagnosis record is the contract every teacher reply must meet."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tutorloop.agents.records import Diagnosis, DiagnosisLog, FreeDiagnosis

BASE = {"erroneous_step": 2, "error_type": "reasoning", "missing_skill": "Spatial Relations!",
        "explanation": "It confused left and right.", "queries": ["is the circle left of the square"]}


def test_skill_is_normalised_to_kebab_case():
    assert Diagnosis.model_validate(BASE).missing_skill == "spatial-relations"
    long = {**BASE, "missing_skill": "the ability to count very many small things in images"}
    assert Diagnosis.model_validate(long).missing_skill == "the-ability-to-count-very-many"


@pytest.mark.parametrize("change", [
    {"queries": []}, {"queries": ["a", "b", "c", "d"]}, {"queries": ["ok", "   "]}, {"erroneous_step": 0},
    {"error_type": "mystery"}, {"missing_skill": "?!"}, {"explanation": ""}, {"extra": 1},
])
def test_invalid_diagnoses_are_rejected(change):
    with pytest.raises(ValidationError):
        Diagnosis.model_validate({**BASE, **change})


def test_schema_sent_to_the_teacher_requires_every_field():
    schema = FreeDiagnosis.model_json_schema()  # what a teacher without a skill map is sent
    assert set(schema["required"]) == set(BASE) and schema["additionalProperties"] is False
    assert schema["properties"]["queries"]["maxItems"] == 3
    assert schema["properties"]["queries"]["items"]["minLength"] == 1  # constrained decoding: no empty query
    assert set(schema["properties"]["error_type"]["enum"]) == {
        "perception", "reasoning", "knowledge", "instruction_following", "format", "other"}


def test_log_row_from_a_failure(make_failure):
    row = DiagnosisLog.from_failure(make_failure(3, steps=["a"]))
    assert (row.sample_id, row.diagnosis, row.error, row.selected_ids) == ("val-003", None, None, [])
    assert DiagnosisLog.model_validate_json(row.model_dump_json()) == row
