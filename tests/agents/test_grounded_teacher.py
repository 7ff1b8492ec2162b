"""Diagnoses grounded in the skill map: the reply's skills are a JSON-schema enum of the map skills the
prompt lists, in both structured-output dialects; a reply outside the enum is rejected with its raw text
kept; planning turns grounded diagnoses into one gap per map skill, budgeted by weight."""

from __future__ import annotations

import json

import pytest

from tutorloop.agents.planning import plan_gaps
from tutorloop.agents.records import Diagnosis, WeightedSkill
from tutorloop.agents.teacher import (
    NONE_OF_THESE,
    ReplyError,
    SkillChoice,
    diagnose_failures,
    grounded_schema,
    parse_grounded_reply,
)
from tutorloop.agents.teacher_config import TeacherConfig

CHOICES = [SkillChoice("side-colour", "the colour of the shape on one side", "spatial"),
           SkillChoice("vertical-colour", "the colour of the shape in one half", "spatial"),
           SkillChoice("count", "how many shapes", "counting")]
NAMES = [c.name for c in CHOICES]


def grounded(skills, *, other=None, queries=("what colour is the shape on the left?",)) -> str:
    return json.dumps({"erroneous_step": None, "error_type": "perception",
                       "missing_skills": [{"skill": s, "weight": w} for s, w in skills], "other_skill": other,
                       "explanation": "It named the colour of the wrong shape.", "queries": list(queries)})


def enum_of(schema: dict) -> list[str]:
    items = schema["properties"]["missing_skills"]["items"]
    return schema["$defs"][items["$ref"].rsplit("/", 1)[1]]["properties"]["skill"]["enum"]


def config_for(server, **overrides) -> TeacherConfig:
    return TeacherConfig(**{"base_url": server.base_url, "timeout_s": 2.0, "backoff_s": 0.01, "max_retries": 1,
                            "progress": False, "concurrency": 2, "cache_dir": None, **overrides})


def test_the_schema_is_an_enum_of_the_listed_skills_and_every_field_is_required():
    schema = grounded_schema(NAMES)
    assert enum_of(schema) == [*NAMES, NONE_OF_THESE]
    assert set(schema["required"]) == {"erroneous_step", "error_type", "missing_skills", "other_skill",
                                       "explanation", "queries"}
    assert schema["additionalProperties"] is False and schema["properties"]["missing_skills"]["maxItems"] == 3
    assert schema["properties"]["queries"]["items"]["minLength"] == 1  # constrained decoding: no empty query
    assert grounded_schema(NAMES[:1]) != schema  # each failure's own list


def test_a_grounded_reply_is_normalised():
    diagnosis = parse_grounded_reply(grounded([("vertical-colour", 0.2), ("side-colour", 0.6),
                                               ("side-colour", 0.2)]), NAMES)
    assert diagnosis.grounded and diagnosis.missing_skill == "side-colour"
    assert [(s.skill, s.weight) for s in diagnosis.skills] == [("side-colour", 0.8), ("vertical-colour", 0.2)]
    over = parse_grounded_reply(grounded([("count", 2), ("side-colour", 6)]), NAMES)  # relative weights
    assert [(s.skill, s.weight) for s in over.skills] == [("side-colour", 0.75), ("count", 0.25)]
    zero = parse_grounded_reply(grounded([("count", 0), ("side-colour", 0)]), NAMES)
    assert [s.weight for s in zero.skills] == [0.5, 0.5]
    other = parse_grounded_reply(grounded([(NONE_OF_THESE, 1)], other="Corner Colours"), NAMES)
    assert other.skills == [] and other.missing_skill == "corner-colours" and other.other_skill == "corner-colours"


@pytest.mark.parametrize(("reply", "problem"), [
    (grounded([("colour-by-corner", 1)]), "missing_skills.0.skill"),  # a skill the map does not have
    (grounded([(NONE_OF_THESE, 1)]), "needs other_skill"),
    (grounded([("count", 1)] * 4), "missing_skills"),
    (grounded([("count", -0.5)]), "weight"),
])
def test_replies_outside_the_schema_are_rejected(reply, problem):
    with pytest.raises(ReplyError, match=problem):
        parse_grounded_reply(reply, NAMES)


@pytest.mark.parametrize("dialect", ["json_schema", "json_object"])
def test_both_dialects_send_the_enum_and_parse_the_reply(scripted, image_root, make_failure, dialect):
    server = scripted(reply=lambda request: grounded([("side-colour", 0.5), ("vertical-colour", 0.5)]),
                      reject_json_schema=dialect == "json_object")
    records = [make_failure(i, question="<image>\nwhat colour is the shape on the left at the top?") for i in range(2)]
    result = diagnose_failures(records, image_root, config_for(server, dialect="auto"),
                               choices=lambda record: CHOICES)
    assert result.ok == 2 and result.dialect == dialect and server.shape_errors == []
    fmt = server.requests[-1]["response_format"]
    schema = fmt["json_schema"]["schema"] if dialect == "json_schema" else fmt["schema"]
    assert fmt["type"] == dialect and enum_of(schema) == [*NAMES, NONE_OF_THESE]
    if dialect == "json_schema":
        assert fmt["json_schema"]["name"] == "grounded_diagnosis"
    text = server.requests[-1]["messages"][1]["content"][-1]["text"]
    assert "- side-colour: the colour of the shape on one side (spatial)" in text
    assert "pool_skills" in text and NONE_OF_THESE in server.requests[-1]["messages"][0]["content"]
    assert [s.skill for s in result.logs[0].diagnosis.skills] == ["side-colour", "vertical-colour"]


def test_a_reply_outside_the_enum_is_rejected_with_its_raw_text(scripted, image_root, make_failure):
    bad = grounded([("colour-by-corner", 1)])
    server = scripted(reply=lambda request: bad)
    result = diagnose_failures([make_failure(0)], image_root, config_for(server, dialect="json_schema"),
                               choices=lambda record: CHOICES)
    row = result.logs[0]
    assert result.rejected == 1 and row.diagnosis is None and row.raw == bad
    assert row.error.startswith("not a Diagnosis: missing_skills.0.skill") and "side-colour" in row.error
    assert row.attempts == 2  # re-asked once (max_retries=1), with sampling, before giving up


def test_without_choices_the_free_schema_is_sent(scripted, image_root, make_failure):
    from tutorloop.agents.teacher import DIAGNOSIS_SCHEMA

    server = scripted()
    result = diagnose_failures([make_failure(0)], image_root, config_for(server, dialect="json_schema"),
                               choices=lambda record: [])
    assert result.ok == 1 and not result.logs[0].diagnosis.grounded
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == DIAGNOSIS_SCHEMA


def _diagnosis(skills, queries=("q",)) -> Diagnosis:
    return Diagnosis(erroneous_step=None, error_type="perception", missing_skill=skills[0][0], explanation="x",
                     queries=list(queries), skills=[WeightedSkill(skill=s, weight=w) for s, w in skills],
                     grounded=True)


def test_grounded_diagnoses_plan_one_gap_per_map_skill_by_weight():
    diagnoses = [_diagnosis([("side-colour", 0.5), ("vertical-colour", 0.5)], queries=("corner q",)),
                 _diagnosis([("side-colour", 1.0)], queries=("side q",)),
                 Diagnosis(erroneous_step=None, error_type="other", missing_skill="counting", explanation="x",
                           queries=["how many"])]
    gaps = plan_gaps(diagnoses, 25, sample_ids=["a", "b", "c"], questions=["qa", "qb", "qc"])
    by_skill = {g.skill: g for g in gaps}
    assert set(by_skill) == {"side-colour", "vertical-colour", "counting"}
    assert by_skill["side-colour"].skills == ["side-colour"] and by_skill["counting"].skills == []
    assert (by_skill["side-colour"].weight, by_skill["vertical-colour"].weight, by_skill["counting"].weight) == \
        (1.5, 0.5, 1.0)
    assert sum(g.budget for g in gaps) == 25
    assert by_skill["side-colour"].budget > by_skill["counting"].budget > by_skill["vertical-colour"].budget
    assert by_skill["side-colour"].sample_ids == ["a", "b"] and by_skill["vertical-colour"].sample_ids == ["a"]
    assert "corner q" in by_skill["vertical-colour"].queries and "qa" in by_skill["vertical-colour"].queries
