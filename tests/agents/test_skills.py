"""The skill map: built over a real (small) demo pool in the embedded Qdrant engine, named by the oracle
teacher (a real HTTP server reading the world's ground truth); its cache and resume; hand edits; the
grounding of a failure in the map's nearest skills."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tutorloop.agents.skills import (
    ClusterName,
    MapGrounding,
    SkillMapError,
    applied_path,
    build_skill_map,
    fine_k,
    is_applied,
    load_skill_map,
    map_path,
    map_status,
    merge_named,
    open_map,
)
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.demo.oracle_teacher import OracleTeacher
from tutorloop.retrieval.index import PoolIndex
from tutorloop.training.records import EvalRecord


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    from tutorloop.demo.pool import write_pool
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
    from tutorloop.retrieval.index import index_pool

    root = tmp_path_factory.mktemp("skills-world")
    pool = write_pool(root / "pool", 300, 0, progress=False)
    index = PoolIndex.open(store=root / "index")
    try:
        index_pool(pool, index=index, embedder=embedder(), embedder_name=DEFAULT_EMBEDDER, clusters=4, progress=False)
    finally:
        index.close()
    return root / "index"


_EMBEDDER = []


def embedder():
    from tutorloop.retrieval.embed import load_embedder

    if not _EMBEDDER:
        _EMBEDDER.append(load_embedder())
    return _EMBEDDER[0]


@pytest.fixture
def store(base_store, tmp_path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(base_store, copy)
    return copy


def teacher_of(oracle: OracleTeacher, **overrides) -> TeacherConfig:
    return TeacherConfig(**{"base_url": oracle.base_url, "model": "oracle", "dialect": "json_object",
                            "send_images": False, "progress": False, "backoff_s": 0.01, **overrides})


def test_k_rule():
    assert [fine_k(n) for n in (0, 1, 40, 300, 6000, 100_000, 1_000_000, 10_000_000)] == \
        [1, 1, 20, 32, 55, 224, 707, 1024]


def test_build_names_every_cluster_labels_every_point_and_writes_a_readable_map(store):
    index = PoolIndex.open(store=store)
    try:
        path = map_path(store, "pool")
        with OracleTeacher() as oracle:
            skill_map = build_skill_map(index, teacher_of(oracle), path, seed=0)
            assert oracle.requests == skill_map.k == 32 == skill_map.cost.requests
        names = {s.name for s in skill_map.skills}
        # the oracle names a cluster by its majority world skill: the pool's skills come back as skills
        assert {"side-colour", "vertical-colour", "count", "colour"} <= names
        assert skill_map.unnamed == {} and sum(s.size for s in skill_map.skills) == skill_map.points == 300
        assert sorted(c for s in skill_map.skills for c in s.clusters) == list(range(32))  # merged, none lost
        assert index.count_with("skill") == 300 and index.count_with("skill_cluster") == 300
        text = path.read_text()
        assert json.loads(text)["k_rule"].startswith("clamp(round(sqrt(N / 2))") and "\n  " in text  # indented
        assert is_applied(path)
        side = {h.payload["source"] for h in index.query(_vector("what colour is the shape on the left?"), 20,
                                                          skills=["side-colour"])}
        assert side and side <= {"side_colour-v1"} | {"size_colour-v1", "vertical_colour-v1"}  # majority-named
    finally:
        index.close()


def test_a_map_named_by_the_pools_own_tag_needs_no_teacher(store):
    index = PoolIndex.open(store=store)
    try:
        path = map_path(store, "pool")
        skill_map = build_skill_map(index, None, path, seed=0, names_from="source")
        assert skill_map.cost.requests == 0 and skill_map.teacher == {"names_from": "source"}
        names = {s.name for s in skill_map.skills}
        assert {"side-colour-v1", "count-v1"} <= names  # the pool's sources, kebab-cased
        assert sorted(c for s in skill_map.skills for c in s.clusters) == list(range(32))
        side = next(s for s in skill_map.skills if s.name == "side-colour-v1")
        assert "source='side_colour-v1'" in side.description and "e.g." in side.description
        assert index.count_with("skill") == 300
        assert load_skill_map(path).model_dump() == skill_map.model_dump()
        # a tag no point carries: every cluster unnamed, with the reason
        untagged = build_skill_map(index, None, path, names_from="dataset")
        assert untagged.skills == [] and set(untagged.unnamed.values()) == {"no point of the cluster has 'dataset'"}
    finally:
        index.close()
    with pytest.raises(ValueError, match="a teacher or names_from"):
        build_skill_map(None, None, path)


def test_a_rebuild_is_served_by_the_cache_and_a_broken_build_resumes(store):
    index = PoolIndex.open(store=store)
    try:
        path = map_path(store, "pool")
        with FlakyOracle(fail_first=10) as flaky:  # the first 10 naming calls fail: a build cut short
            first = build_skill_map(index, teacher_of(flaky, max_retries=0), path)
        assert len(first.unnamed) == 10 and first.cost.rejected == 10
        assert all("HTTP 500" in reason for reason in first.unnamed.values())
        with OracleTeacher() as oracle:
            second = build_skill_map(index, teacher_of(oracle), path)
            assert oracle.requests == 10  # only the clusters without a cached reply
            assert second.unnamed == {} and second.cost.cached == 22
            third = build_skill_map(index, teacher_of(oracle), path)
            assert oracle.requests == 10 and third.cost.cached == 32  # nothing asked again
        assert [s.model_dump() for s in third.skills] == [s.model_dump() for s in second.skills]
    finally:
        index.close()


def test_a_hand_edit_is_respected(store):
    index = PoolIndex.open(store=store)
    try:
        path = map_path(store, "pool")
        with OracleTeacher() as oracle:
            build_skill_map(index, teacher_of(oracle), path)
        data = json.loads(path.read_text())
        by_name = {s["name"]: s for s in data["skills"]}
        by_name["side-colour"]["name"] = "Colour by Side"  # a rename (normalised to kebab-case)
        by_name["vertical-colour"]["name"] = "colour-by-side"  # and a merge: two skills given one name
        by_name["colour-by-side"] = by_name.pop("side-colour")
        path.write_text(json.dumps(data, indent=2))
        assert not is_applied(path)
        skill_map, status = open_map("auto", index, store, "pool")
        assert status.used and is_applied(path)
        merged = skill_map.by_name()["colour-by-side"]
        assert "side-colour" not in skill_map.by_name() and "vertical-colour" not in skill_map.by_name()
        labelled = {h.payload["skill"] for h in index.query(_vector("what colour is the shape at the top?"), 300)}
        assert "colour-by-side" in labelled and not labelled & {"side-colour", "vertical-colour"}
        assert index.count_with("skill") == 300 and len(merged.clusters) >= 2

        data["skills"][0]["clusters"].append(data["skills"][1]["clusters"][0])  # one cluster, two skills
        path.write_text(json.dumps(data))
        with pytest.raises(SkillMapError, match="belongs to both"):
            load_skill_map(path)
        path.write_text("{not json")
        with pytest.raises(SkillMapError, match=f"{path}:1:2"):
            load_skill_map(path)
    finally:
        index.close()


def test_without_a_map_the_status_says_so_and_grounding_lists_the_nearest_skills(store):
    index = PoolIndex.open(store=store)
    try:
        status = map_status("auto", store, "pool")
        assert not status["used"] and "no skill map" in status["reason"]
        skill_map, opened = open_map("auto", index, store, "pool")
        assert skill_map is None and not opened.used
        assert map_status("off", store, "pool")["reason"].startswith("skill map switched off")
        with pytest.raises(SkillMapError, match="does not exist"):
            open_map(str(store / "nowhere.json"), index, store, "pool")

        with OracleTeacher() as oracle:
            build_skill_map(index, teacher_of(oracle), map_path(store, "pool"))
        skill_map, opened = open_map("auto", index, store, "pool")
        assert opened.used and map_status("auto", store, "pool")["skills"] == len(skill_map.skills)
        grounding = MapGrounding(skill_map, index, embedder(), shown=5)
        corner = EvalRecord(id="v1", question="<image>\nwhat colour is the shape on the left at the top?",
                            reference="red", prediction="blue", correct=False)
        count = EvalRecord(id="v2", question="how many shapes are there?", reference="2", prediction="3",
                           correct=False)
        choices = grounding.choices_for([corner, count])
        assert len(choices["v1"]) == 5 and choices["v1"][0].description
        assert {"side-colour", "vertical-colour"} & {c.name for c in choices["v1"][:3]}
        assert choices["v2"][0].name == "count"
    finally:
        index.close()


def test_clusters_named_alike_merge_and_reorderings_do_not():
    named = {0: ClusterName(name="colour-of-shapes", description="d0", category="perception"),
             1: ClusterName(name="color of shape", description="d1", category="perception"),
             2: ClusterName(name="size-colour", description="d2", category="perception"),
             3: ClusterName(name="colour-size", description="d3", category="perception")}
    skills = merge_named(named, {0: 5, 1: 9, 2: 3, 3: 4}, {c: [f"q{c}"] for c in named})
    by = {s.name: s for s in skills}
    assert set(by) == {"color-of-shape", "size-colour", "colour-size"}
    assert by["color-of-shape"].clusters == [0, 1] and by["color-of-shape"].size == 14
    assert by["color-of-shape"].description == "d1"  # the largest cluster's


def test_unreadable_applied_marker_means_not_applied(store):
    path = map_path(store, "pool")
    path.write_text("{}")
    applied_path(path).write_text("deadbeef\n")
    assert not is_applied(path)


class FlakyOracle(OracleTeacher):
    """The oracle, but its first ``fail_first`` answers are HTTP 500 (a teacher that went away)."""

    def __init__(self, fail_first: int) -> None:
        super().__init__()
        self.fail_first = fail_first

    def answer(self, request):
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return 500, {"error": {"message": "scripted outage"}}
        return super().answer(request)


def _vector(text: str):
    from tutorloop.retrieval.embed import embed_texts

    return embed_texts(embedder(), [text])[0]


def test_hybrid_retrieval_records_the_arms_and_they_reach_the_selection_reason(store):
    from tutorloop.agents.planning import Gap
    from tutorloop.agents.retrieve import retrieve_candidates
    from tutorloop.retrieval.rerank import RerankConfig, rerank

    index = PoolIndex.open(store=store)
    try:
        with OracleTeacher() as oracle:
            build_skill_map(index, teacher_of(oracle), map_path(store, "pool"))
        question = "what colour is the shape on the left at the top?"
        gaps = [Gap(skill="vertical-colour", skills=["vertical-colour"], n_errors=1, queries=[question], budget=5),
                Gap(skill="free", n_errors=1, queries=["how many shapes are there?"], budget=3)]
        by_gap = retrieve_candidates(gaps, index, embedder(), factor=4, exclude=frozenset())
        mapped = by_gap["vertical-colour"]
        assert len(mapped) == 20 and all(c.arms for c in mapped) and all(c.arms for c in mapped)
        sources = {c.sample_id: h.payload["source"] for c in mapped
                   for h in index.query(_vector(question), 300) if h.sample_id == c.sample_id}
        for c in mapped:  # the filtered arm only finds the gap's skill
            assert "skill-map" not in c.arms or sources[c.sample_id] != "misc-v1"
        assert {"skill-map", "free-text"} <= {a for c in mapped for a in c.arms}
        assert all(c.arms == [] for c in by_gap["free"])  # a gap without skills: the plain search
        scored = rerank(by_gap, {"vertical-colour": 5, "free": 3}, RerankConfig(use_perturbation=False))
        chosen = [s for s in scored if s.selected and s.gap == "vertical-colour"]
        assert len(chosen) == 5 and all(s.why().arms for s in chosen)
        assert all("RRF of" in s.reason for s in chosen)
    finally:
        index.close()


def test_the_skills_command_names_by_tag_and_keeps_a_map_that_matches(store, capsys):
    from tutorloop.agents.cli import main

    assert main(["skills", "--store", str(store), "--names-from", "source"]) == 0
    first = capsys.readouterr()
    assert "side-colour-v1" in first.out and "0 requests" in first.out
    assert load_skill_map(map_path(store, "pool")).teacher == {"names_from": "source"}
    assert main(["skills", "--store", str(store), "--names-from", "source"]) == 0
    assert "kept" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a namer is required: --teacher or --names-from
        main(["skills", "--store", str(store)])


def test_ensure_skill_map_builds_once_and_keeps_a_hand_edit(store):
    from tutorloop.agents.api import ensure_skill_map

    path = ensure_skill_map(store, names_from="source")
    data = json.loads(path.read_text())
    data["skills"][0]["name"] = "renamed-by-hand"
    path.write_text(json.dumps(data))
    assert ensure_skill_map(store, names_from="source") == path
    assert "renamed-by-hand" in path.read_text()  # kept, not rebuilt; the run applies it


def test_ensure_skill_map_waits_while_another_run_reads_the_store(store, hold_store):
    """Two runs on one pool: the second's map check waits for the first to let go instead of failing."""
    import time

    from tutorloop.agents.api import ensure_skill_map

    hold_store(store, 2)
    began = time.monotonic()
    path = ensure_skill_map(store, names_from="source")
    assert path.is_file() and time.monotonic() - began > 0.5  # it waited for the holder, then built
