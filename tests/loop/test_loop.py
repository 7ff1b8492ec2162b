"""The whole loop for 2 rounds on a tiny world, with each selector; the teacher is a scripted
OpenAI-compatible server on 127.0.0.1 (tests/agents/scripted_openai.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.cmd_run import execute
from agents.run_dir import read_json, read_jsonl


def _scripted_module():
    spec = importlib.util.spec_from_file_location(
        "loop_scripted_openai", Path(__file__).parents[1] / "agents" / "scripted_openai.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _selected(out: Path, rounds: int) -> list[list[str]]:
    return [[r["id"] for r in read_jsonl(out / f"round_{n:02d}" / "selected.jsonl")] for n in range(1, rounds + 1)]


def test_teacher_loop_runs_two_rounds_and_logs_every_diagnosis(tiny_world, loop_config, tmp_path, capsys):
    with _scripted_module().ScriptedOpenAI() as server:
        config = loop_config(tiny_world, tmp_path / "run", selector="teacher",
                             teacher={"base_url": server.base_url, "dialect": "json_schema", "progress": False})
        summary = execute(config, run_id="test-teacher")
        requests = server.count

    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["stop_reason"] == "rounds spent (2)"
    selections = _selected(config.out, 2)
    assert [len(s) for s in selections] == [6, 6]
    flat = [i for s in selections for i in s]
    assert len(set(flat)) == len(flat), "a sample was selected twice"

    failures = [r for r in read_jsonl(config.out / "round_00" / "eval.jsonl") if not r["correct"]]
    diagnoses = read_jsonl(config.out / "round_01" / "diagnoses.jsonl")
    assert len(diagnoses) == len(failures)
    asked = len(diagnoses) + len(read_jsonl(config.out / "round_02" / "diagnoses.jsonl"))
    assert requests == asked, "one request per failure, none lost, none repeated"
    assert all(d["diagnosis"] is not None for d in diagnoses)
    assert set().union(*(d["selected_ids"] for d in diagnoses)) == set(selections[0])
    for row in read_jsonl(config.out / "round_01" / "selected.jsonl"):
        assert row["selection"]["reason"] and row["conversations"][-1]["from"] == "gpt"
    for n in (1, 2):
        assert (config.out / f"round_{n:02d}" / "adapter" / "adapter_config.json").exists()
        metrics = read_json(config.out / f"round_{n:02d}" / "metrics.json")
        assert {"val_accuracy", "test_accuracy", "generic_accuracy", "seconds"} <= metrics.keys()
        assert {"diagnose", "retrieve", "rerank", "train", "evaluate"} <= metrics["seconds"].keys()

    assert main(["review", str(config.out), "--round", "1"]) == 0
    shown = capsys.readouterr().out
    assert "missing skill" in shown and f"round 1: {len(diagnoses)} failures diagnosed" in shown
    assert "misread" in shown, "the teacher's explanation (scripted_openai.py) reaches the reviewer"


def test_random_selector_draws_the_budget_from_the_pool_without_repeats(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="random")
    summary = execute(config, run_id="test-random")
    selections = _selected(config.out, 2)
    assert [len(s) for s in selections] == [6, 6]
    assert not set(selections[0]) & set(selections[1])
    assert not (config.out / "round_01" / "candidates.jsonl").exists()
    assert summary["final"]["selected"] == 12


def test_failures_selector_needs_no_teacher_and_is_reproducible(tiny_world, loop_config, tmp_path):
    first = execute(loop_config(tiny_world, tmp_path / "a", selector="failures", rounds=1), run_id="a")
    second = execute(loop_config(tiny_world, tmp_path / "b", selector="failures", rounds=1), run_id="b")
    assert _selected(tmp_path / "a", 1) == _selected(tmp_path / "b", 1)
    assert first["final"] == second["final"]
    scored = read_jsonl(tmp_path / "a" / "round_01" / "scored.jsonl")
    assert sum(r["selected"] for r in scored) == 12 and all(r["reason"] for r in scored)


def test_run_command_resumes_a_finished_run_without_recomputing(tiny_world, loop_config, tmp_path, capsys):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", rounds=1)
    (tmp_path / "cfg.json").write_text(json.dumps(config.model_dump(mode="json")))
    assert main(["run", "--config", str(tmp_path / "cfg.json"), "--out", str(config.out)]) == 0
    stamp = (config.out / "round_01" / "selected.jsonl").stat().st_mtime_ns
    assert main(["run", "--out", str(config.out)]) == 0  # only --out: config comes from run.json
    assert (config.out / "round_01" / "selected.jsonl").stat().st_mtime_ns == stamp
    assert "resuming run" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--budget", "5"], ["--store", "x", "--qdrant-url", "http://y"]])
def test_run_command_rejects_an_incomplete_or_contradictory_config(tmp_path, flags, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), *flags]) == 2
    assert "tutorloop run:" in capsys.readouterr().err


def test_known_share_takes_its_part_of_the_round_budget(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", known_share=0.5, rounds=1, budget=6)
    execute(config, run_id="test-known")
    plan = read_json(config.out / "round_01" / "gaps.json")
    assert plan["known"] == 3 and sum(g["budget"] for g in plan["gaps"]) == 3
    rows = read_jsonl(config.out / "round_01" / "selected.jsonl")
    # the random tiny student answers no pool sample right: nothing to replay, the gaps keep their half only
    assert [r for r in rows if r["selection"]["gap"] == "known"] == [] and len(rows) == 3
