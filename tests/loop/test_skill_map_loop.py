"""`run --selector teacher` with a skill map beside the index: diagnoses are grounded in it (the oracle
teacher, a real HTTP server), the run says so in run.json and gaps.json, and every candidate records the
hybrid search's arms in selected.jsonl. Without a map the run says it diagnoses freely."""

from __future__ import annotations

import json
import shutil

from tutorloop.agents.api import run
from tutorloop.agents.run_dir import DIAGNOSES, PLAN, SELECTED, RunDir
from tutorloop.agents.skills import build_skill_map, map_path
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.demo.oracle_teacher import OracleTeacher
from tutorloop.retrieval.index import PoolIndex


def test_a_teacher_run_uses_the_map_beside_the_index(tiny_world, loop_config, tmp_path, capsys):
    store = tmp_path / "index"  # a copy: the session's index must stay map-less for the other tests
    shutil.copytree(tiny_world.store, store)
    with OracleTeacher() as oracle:
        teacher = {"base_url": oracle.base_url, "model": "oracle", "dialect": "json_object", "send_images": False,
                   "progress": False}
        bare = loop_config(tiny_world, tmp_path / "bare", selector="teacher", store=store, teacher=teacher,
                           rounds=1, budget=6)
        run(bare, run_id="no-map")
        assert "skill map: not used" in capsys.readouterr().err
        assert RunDir(bare.out).read_info().skill_map["used"] is False
        assert RunDir(bare.out).read(1, PLAN).teacher["skill_map"]["used"] is False
        assert all(not row.diagnosis.grounded for row in RunDir(bare.out).read(1, DIAGNOSES) if row.diagnosis)

        index = PoolIndex.open(store=store)
        try:
            skill_map = build_skill_map(index, TeacherConfig(**teacher), map_path(store, "pool"))
        finally:
            index.close()
        config = loop_config(tiny_world, tmp_path / "run", selector="teacher", store=store, teacher=teacher,
                             rounds=1, budget=6)
        run(config, run_id="with-map")
    assert "skill map: used" in capsys.readouterr().err
    run_dir = RunDir(config.out)
    info = run_dir.read_info()
    assert info.skill_map["used"] and info.skill_map["path"] == str(map_path(store, "pool"))
    plan = run_dir.read(1, PLAN)
    assert plan.teacher["skill_map"]["used"] and plan.teacher["skill_map"]["build_cost"]["requests"] == skill_map.k
    names = {s.name for s in skill_map.skills}
    rows = [row for row in run_dir.read(1, DIAGNOSES) if row.diagnosis]
    assert rows and all(row.diagnosis.grounded and {s.skill for s in row.diagnosis.skills} <= names for row in rows)
    assert {g.skill for g in plan.gaps} <= names and all(g.skills == [g.skill] for g in plan.gaps)
    assert "side-colour" in {g.skill for g in plan.gaps}  # the target's own skill: the oracle is right
    selected = [json.loads(line)["selection"] for line in run_dir.path(1, SELECTED).read_text().splitlines()]
    assert len(selected) == 6 and all(s["arms"] for s in selected)
    assert [r.why.arms for r in run_dir.read(1, SELECTED)] == [s["arms"] for s in selected]
