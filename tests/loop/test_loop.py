"""The whole loop for 2 rounds on a tiny world, with each selector; the teacher is a scripted
OpenAI-compatible server on 127.0.0.1 (tests/agents/scripted_openai.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorloop.agents.api import run
from tutorloop.agents.cli import main
from tutorloop.agents.run_dir import CANDIDATES, DIAGNOSES, EVALS, METRICS, PLAN, SCORED, SELECTED, RunDir


def _selected(out: Path, rounds: int) -> list[list[str]]:
    return [[r.sample.id for r in RunDir(out).read(n, SELECTED)] for n in range(1, rounds + 1)]


def test_teacher_loop_runs_two_rounds_and_logs_every_diagnosis(tiny_world, loop_config, scripted_openai, tmp_path,
                                                                capsys):
    with scripted_openai.ScriptedOpenAI() as server:
        config = loop_config(tiny_world, tmp_path / "run", selector="teacher",
                             teacher={"base_url": server.base_url, "dialect": "json_schema", "progress": False})
        summary = run(config, run_id="test-teacher")
        requests = server.count

    assert [r.round for r in summary.rounds] == [1, 2]
    assert summary.stop_reason == "rounds spent (2)"
    selections = _selected(config.out, 2)
    assert [len(s) for s in selections] == [6, 6]
    flat = [i for s in selections for i in s]
    assert len(set(flat)) == len(flat), "a sample was selected twice"

    run_dir = RunDir(config.out)
    failures = [r for r in run_dir.read(0, EVALS["val"]) if not r.correct]
    diagnoses = run_dir.read(1, DIAGNOSES)
    assert len(diagnoses) == len(failures)
    asked = len(diagnoses) + len(run_dir.read(2, DIAGNOSES))
    assert requests == asked, "one request per failure, none lost, none repeated"
    counts = summary.rounds[0].diagnoses
    assert counts["failures"] == len(failures) == counts["sent"] + counts["not_sent"]
    assert counts["sent"] == counts["diagnosed"] + counts["rejected"] == len(diagnoses)
    assert all(d.diagnosis is not None for d in diagnoses)
    assert set().union(*(d.selected_ids for d in diagnoses)) == set(selections[0])
    for line in run_dir.path(1, SELECTED).read_text().splitlines():  # the pool's own format + "selection"
        row = json.loads(line)
        assert row["selection"]["reason"] and row["conversations"][-1]["from"] == "gpt"
    for n in (1, 2):
        assert (run_dir.adapter(n) / "adapter_config.json").exists()
        metrics = run_dir.read(n, METRICS)
        assert None not in (metrics.val_accuracy, metrics.test_accuracy, metrics.generic_accuracy)
        assert {"diagnose", "retrieve", "rerank", "train", "evaluate"} <= metrics.seconds.keys()

    assert main(["review", str(config.out), "--round", "1"]) == 0
    shown = capsys.readouterr().out
    assert "missing skill" in shown and f"round 1: {len(diagnoses)} failures diagnosed" in shown
    assert "misread" in shown, "the teacher's explanation (scripted_openai.py) reaches the reviewer"


def test_random_selector_draws_the_budget_from_the_pool_without_repeats(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="random")
    summary = run(config, run_id="test-random")
    selections = _selected(config.out, 2)
    assert [len(s) for s in selections] == [6, 6]
    assert not set(selections[0]) & set(selections[1])
    run_dir = RunDir(config.out)
    assert not run_dir.has(1, CANDIDATES) and not run_dir.has(1, DIAGNOSES), "random retrieves and diagnoses nothing"
    assert {"draw", "train", "evaluate"} == run_dir.seconds(1).keys() - {"replay", "operating_point"}
    assert summary.final.selected == 12


def test_failures_selector_needs_no_teacher_and_is_reproducible(tiny_world, loop_config, tmp_path):
    first = run(loop_config(tiny_world, tmp_path / "a", selector="failures", rounds=1), run_id="a")
    second = run(loop_config(tiny_world, tmp_path / "b", selector="failures", rounds=1), run_id="b")
    assert _selected(tmp_path / "a", 1) == _selected(tmp_path / "b", 1)
    assert first.final == second.final
    scored = RunDir(tmp_path / "a").read(1, SCORED)
    assert sum(r.selected for r in scored) == 12 and all(r.reason for r in scored)


def test_run_command_resumes_a_finished_run_without_recomputing(tiny_world, loop_config, tmp_path, capsys):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", rounds=1)
    (tmp_path / "cfg.json").write_text(json.dumps(config.model_dump(mode="json")))
    assert main(["run", "--config", str(tmp_path / "cfg.json"), "--out", str(config.out)]) == 0
    selected = RunDir(config.out).path(1, SELECTED)
    stamp = selected.stat().st_mtime_ns
    assert main(["run", "--out", str(config.out)]) == 0  # only --out: config comes from run.json
    assert selected.stat().st_mtime_ns == stamp
    assert "has finished (rounds spent (1)); its results" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--budget", "5"], ["--store", "x", "--qdrant-url", "http://y"]])
def test_run_command_rejects_an_incomplete_or_contradictory_config(tmp_path, flags, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), *flags]) == 2
    assert "tutorloop run:" in capsys.readouterr().err


def test_known_share_takes_its_part_of_the_round_budget(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", known_share=0.5, rounds=1, budget=6)
    run(config, run_id="test-known")
    plan = RunDir(config.out).read(1, PLAN)
    assert plan.known == 3 and len(plan.known_ids) == 3 and sum(g.budget for g in plan.gaps) == 3
    assert "50% quantile over 12 samples drawn uniformly" in plan.known_reason
    rows = RunDir(config.out).read(1, SELECTED)
    known = [r.sample.id for r in rows if r.why.gap == "known"]
    assert known == plan.known_ids and len(rows) == 6 and len({r.sample.id for r in rows}) == 6


def test_what_replay_cannot_fill_goes_to_the_gaps(tiny_world, loop_config, tmp_path):
    # A quantile so low that the whole 300-sample pool holds only 2 "known" samples of the 3 wanted.
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", known_share=0.5, known_quantile=0.005,
                         rounds=1, budget=6)
    run(config, run_id="test-known-short")
    plan = RunDir(config.out).read(1, PLAN)
    assert plan.known == 2 and sum(g.budget for g in plan.gaps) == 4
    assert "2 of 3 wanted" in plan.known_reason
    assert len(RunDir(config.out).read(1, SELECTED)) == 6, "the round spends its whole budget"


def test_a_messages_form_pool_runs_and_its_selection_comes_back_in_that_form(tiny_world, loop_config, tmp_path):
    """The same world's pool in the OpenAI/TRL messages form: the loop runs unchanged, selected.jsonl is in
    the pool's form (a TRL trainer reads it as is), and --export converts it."""
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, load_embedder
    from tutorloop.retrieval.index import PoolIndex, index_pool
    from tutorloop.retrieval.ingest import Accepted, iter_samples

    pool = tmp_path / "pool-messages.jsonl"
    pool.write_text("".join(json.dumps(r.sample.to_record("messages")) + "\n"
                            for r in iter_samples(tiny_world.pool) if isinstance(r, Accepted)))
    index = PoolIndex.open(store=tmp_path / "index")
    try:
        index_pool(pool, index=index, embedder=load_embedder(), embedder_name=DEFAULT_EMBEDDER,
                   image_root=tiny_world.pool.parent, clusters=4, progress=False)
    finally:
        index.close()
    for export, key in ((None, "messages"), ("llava", "conversations")):
        config = loop_config(tiny_world, tmp_path / f"run-{export}", selector="failures", rounds=1, budget=6,
                             store=tmp_path / "index", export=export)
        run(config, run_id=f"messages-{export}")
        rows = [json.loads(line) for line in RunDir(config.out).path(1, SELECTED).read_text().splitlines()]
        assert len(rows) == 6 and all(key in row and row["selection"]["reason"] for row in rows)
        assert len(RunDir(config.out).read(1, SELECTED)) == 6  # and it reads back for training


def test_anchors_are_drawn_outside_what_the_round_trains_and_where_it_teaches(tiny_world, loop_config, tmp_path):
    from tutorloop.retrieval.index import PoolIndex

    config = loop_config(tiny_world, tmp_path / "run", selector="failures", known_share=0.5, rounds=1, budget=6,
                         lora={"epochs": 1, "batch_size": 8, "anchor_weight": 1.0, "anchor_samples": 40})
    run(config, run_id="test-anchors")
    rows = RunDir(config.out).read(1, SELECTED)
    report = json.loads((RunDir(config.out).adapter(1) / "training.json").read_text())
    anchors = set(report["anchor_ids"])
    assert len(anchors) == 40 and len(report["anchor_kl"]) == report["steps"] > 0
    assert not anchors & {r.sample.id for r in rows}, "an anchor is never trained on"
    taught = {r.why.cluster for r in rows if r.why.gap != "known"}
    index = PoolIndex.open(store=tiny_world.store)
    try:
        near = {i for cluster in taught for i in index.cluster_vectors(cluster)[0]}
    finally:
        index.close()
    assert taught and not anchors & near, "no anchor in a cluster the round's gaps selected from"
