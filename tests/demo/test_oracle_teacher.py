"""The oracle teacher behind the OpenAI API: the unchanged teacher client talks to it over HTTP, in
both JSON dialects; its answers are the world's ground truth (skill_of_question + the skill's parts)."""

from __future__ import annotations

import pytest

from tutorloop.agents.skills import ClusterSamples, naming_request
from tutorloop.agents.teacher import NONE_OF_THESE, SkillChoice, TeacherClient, diagnose_failures, run_sync
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.demo.oracle_teacher import LABEL, OracleTeacher, name_cluster
from tutorloop.retrieval.records import Sample
from tutorloop.training.records import EvalRecord

MAP = [SkillChoice("side-colour", "colour by side"), SkillChoice("vertical-colour", "colour by half"),
       SkillChoice("count", "how many")]


def failure(i: int, question: str) -> EvalRecord:
    return EvalRecord(id=f"v{i}", question=f"<image>\n{question}", reference="red", prediction="blue", correct=False)


def config(oracle: OracleTeacher, dialect: str) -> TeacherConfig:
    return TeacherConfig(base_url=oracle.base_url, model="oracle", dialect=dialect, send_images=False,
                         progress=False, cache_dir=None)


@pytest.mark.parametrize("dialect", ["json_schema", "json_object"])
def test_grounded_diagnoses_name_the_parts_of_a_composite_skill(tmp_path, dialect):
    records = [failure(0, "what colour is the shape on the left at the top?"),
               failure(1, "the shape on the right is what colour?"),
               failure(2, "what is one plus two?")]
    with OracleTeacher() as oracle:
        result = diagnose_failures(records, tmp_path, config(oracle, dialect), choices=lambda r: MAP)
        assert oracle.requests == 3 and oracle.kinds == {dialect: 3}
    corner, side, unknown = (row.diagnosis for row in result.logs)
    assert [(s.skill, s.weight) for s in corner.skills] == [("side-colour", 0.5), ("vertical-colour", 0.5)]
    assert corner.grounded and "corner_colour" in corner.explanation
    assert [s.skill for s in side.skills] == ["side-colour"] and side.missing_skill == "side-colour"
    assert unknown.skills == [] and unknown.other_skill == "unknown"


def test_a_part_the_map_lacks_becomes_none_of_these_with_its_name(tmp_path):
    with OracleTeacher() as oracle:
        result = diagnose_failures([failure(0, "what colour is the shape on the left at the top?")], tmp_path,
                                   config(oracle, "json_object"), choices=lambda r: MAP[:1])
    diagnosis = result.logs[0].diagnosis
    assert [(s.skill, s.weight) for s in diagnosis.skills] == [("side-colour", 1.0)]
    assert diagnosis.other_skill == "vertical-colour" and NONE_OF_THESE not in {s.skill for s in diagnosis.skills}


def test_free_diagnoses_and_cluster_names(tmp_path):
    with OracleTeacher() as oracle:
        free = diagnose_failures([failure(0, "what colour is the shape on the left at the top?")], tmp_path,
                                 config(oracle, "json_schema"))
        samples = [Sample.model_validate({"id": f"p{i}", "conversations": [
            {"from": "human", "value": q}, {"from": "gpt", "value": "x"}]}) for i, q in enumerate(
            ["how many shapes are there?", "count the shapes.", "what shape is this?"])]

        async def name() -> object:
            async with TeacherClient(config(oracle, "json_schema")) as client:
                return await client.ask(naming_request(ClusterSamples(7, 30, samples), tmp_path, send_images=False))

        reply = run_sync(name())
    assert free.logs[0].diagnosis.missing_skill == "corner-colour"  # in its own words: a skill the pool lacks
    assert "what colour is the shape on the left?" in free.logs[0].diagnosis.queries  # the parts' phrasings
    assert (reply.value.name, reply.value.category) == ("count", "counting")
    assert name_cluster("question: what is one plus two?")["name"] == "off-topic-questions"
    assert LABEL == "oracle (upper bound)"
