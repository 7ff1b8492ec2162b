"""The selection benchmark's aggregation and markdown on a hand-made result list."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "selection.py"


@pytest.fixture(scope="module")
def selection():
    spec = importlib.util.spec_from_file_location("selection_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def row(strategy, fraction, seed, test, generic, *, selection_s=1.0, training_s=10.0, noise=0.0,
        sources=None):
    return {"strategy": strategy, "budget_fraction": fraction, "seed": seed, "budget": int(fraction * 1000),
            "test_accuracy": test, "generic_accuracy": generic, "forgetting": generic - 0.9,
            "noise_share": noise, "on_target_share": 0.5, "by_source": sources or {"a": 2, "b": 1},
            "seconds": {"selection": selection_s, "training": training_s}}


ROWS = [
    {**row("zero-shot", 0.0, None, 0.25, 0.9), "seconds": {"selection": 0.0, "training": 0.0}},
    row("random", 0.05, 0, 0.40, 0.88), row("random", 0.05, 1, 0.50, 0.90), row("random", 0.05, 2, 0.45, 0.86),
    row("teacher", 0.05, 0, 0.70, 0.90, selection_s=2.0, training_s=12.0, noise=0.1),
    row("teacher", 0.05, 1, 0.80, 0.89, selection_s=4.0, training_s=14.0, noise=0.3),
    row("teacher", 0.05, 2, 0.75, 0.91, selection_s=3.0, training_s=13.0, noise=0.2),
    row("full-pool", 1.0, 0, 0.72, 0.85, selection_s=0.0, training_s=400.0),
    row("full-pool", 1.0, 1, 0.74, 0.87, selection_s=0.0, training_s=420.0),
]


def test_aggregate_mean_and_spread(selection):
    table = selection.aggregate(ROWS)
    assert [e["strategy"] for e in table] == ["zero-shot", "random", "teacher", "full-pool"]
    teacher = table[2]
    assert teacher["n_seeds"] == 3 and teacher["seeds"] == [0, 1, 2]
    assert teacher["test_accuracy"]["mean"] == pytest.approx(0.75)
    assert teacher["test_accuracy"]["spread"] == pytest.approx(0.05)  # sample sd of .70/.80/.75
    assert teacher["noise_share"]["mean"] == pytest.approx(0.2)
    assert teacher["selection_s"]["mean"] == pytest.approx(3.0)
    assert teacher["selection_s"]["spread"] == pytest.approx(1.0)
    assert teacher["by_source"] == {"a": 6, "b": 3}
    random = table[1]
    assert random["test_accuracy"]["spread"] == pytest.approx(0.05)
    assert random["generic_accuracy"]["mean"] == pytest.approx((0.88 + 0.90 + 0.86) / 3)
    full = table[3]
    assert full["test_accuracy"]["spread"] == pytest.approx(math.sqrt(2 * 0.01**2))
    zero = table[0]
    assert zero["n_seeds"] == 1 and zero["test_accuracy"]["spread"] == 0.0


def test_markdown_table(selection):
    table = selection.aggregate(ROWS)
    text = selection.markdown("side-colour", table,
                              {"pool_size": 1000, "rounds": 2, "epochs": 3, "batch_size": 16, "max_diagnoses": 48},
                              ["a note"], "benchmarks/selection.py --quick")
    lines = text.splitlines()
    teacher = next(line for line in lines if line.startswith("| teacher |"))
    assert "| 5% (50) | 3 | 75.0 ± 5.0 |" in teacher
    assert "| +0.0 ± 1.0 |" in teacher  # forgetting in points, signed
    assert "a 67%, b 33%" in teacher
    assert next(line for line in lines if line.startswith("| zero-shot |")).startswith("| zero-shot | — | 1 | 25.0 ± 0.0")
    assert "- a note" in lines and "full-pool: one LoRA run" in text


def test_plot_writes_png(selection, tmp_path):
    path = tmp_path / "plot.png"
    selection.plot("side-colour", selection.aggregate(ROWS), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_run(root: Path, rounds: list[tuple[float, int, int]]) -> Path:
    from tutorloop.agents.records import DiagnosisLog, RoundMetrics, RunSummary, SelectedSample
    from tutorloop.agents.run_dir import DIAGNOSES, METRICS, SELECTED, RunDir

    run = RunDir(root)
    run.write(0, METRICS, RoundMetrics(round=0, test_accuracy=0.2, generic_accuracy=0.9))
    history = [run.read(0, METRICS)]
    for n, (diagnose_s, asked, cached) in enumerate(rounds, start=1):
        for stage, seconds in {"diagnose": diagnose_s, "retrieve": 1.0, "rerank": 2.0, "train": 5.0,
                               "evaluate": 3.0}.items():
            run.add_seconds(n, stage, seconds)
        run.write(n, DIAGNOSES, [DiagnosisLog(sample_id=f"f{i}", question="q", reference="r", prediction="p",
                                              cached=i < cached) for i in range(asked)])
        sample = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        why = {"gap": "g", "query": "q", "relevance": 1.0, "score": 1.0, "reason": "test"}
        run.write(n, SELECTED, [
            SelectedSample.from_record({"id": f"a{n}", "source": "side_colour-v1", **sample, "selection": why}),
            SelectedSample.from_record({"id": f"b{n}", "source": "colour-v1", "noise": "wrong_answer", **sample,
                                        "selection": why})])
        run.write(n, METRICS, RoundMetrics(round=n, test_accuracy=0.5, generic_accuracy=0.88, selected=2,
                                           seconds=run.seconds(n)))
        history.append(run.read(n, METRICS))
    run.write_summary(RunSummary.from_history(history, "rounds spent", "teacher", 2 * len(rounds)))
    return root


def test_cached_diagnoses_are_charged(selection, tmp_path):
    paid = _write_run(tmp_path / "paid", [(40.0, 4, 0), (44.0, 4, 0)])  # 10 and 11 s per diagnosis
    cached = _write_run(tmp_path / "cached", [(0.05, 4, 4), (22.0, 4, 2)])  # round 1 all from the cache
    cost = selection.diagnosis_cost([paid, cached])
    assert cost == pytest.approx(11.0)  # median of 10, 11, 22/2 (a fully cached round is no price)
    row = selection.strategy_row(cached, "teacher", 0.05, 0, 0.9, ("side_colour-v1",), cost)
    assert row["seconds"]["diagnose_charged_for_cache"] == pytest.approx(6 * 11.0)
    assert row["seconds"]["diagnose"] == pytest.approx(0.05 + 22.0 + 66.0)
    assert row["seconds"]["selection"] == pytest.approx(88.05 + 2 * 3.0)
    assert row["seconds"]["training"] == 10.0
    assert row["selected"] == 4 and row["noise_share"] == 0.5 and row["on_target_share"] == 0.5
    assert row["forgetting"] == pytest.approx(-0.02) and row["test_accuracy"] == 0.5


def test_round_by_round_table(selection, tmp_path):
    rows = [selection.strategy_row(_write_run(tmp_path / name, [(4.0, 4, 0), (4.0, 4, 0)]), name, 0.05, 0, 0.9,
                                   ("side_colour-v1",)) for name in ("random", "failures", "teacher")]
    assert [r["round"] for r in rows[2]["per_round"]] == [0, 1, 2]
    assert rows[2]["per_round"][1]["selected"] == 2 and rows[2]["per_round"][0]["test_accuracy"] == 0.2
    lines = selection.round_lines(rows)
    assert lines[1] == "## Round by round (seed 0, budget 5%)"
    assert "| teacher | 1 | 2 | — | 50.0 | 88.0 | 4.0 | 1.0 | 2.0 | 0.0 | 0.0 | 5.0 | 3.0 |" in lines
    assert sum(line.startswith("| random |") for line in lines) == 3  # rounds 0, 1, 2
    assert selection.round_lines(rows[:2]) == []  # no teacher run at that budget: no table


def test_known_share_rows_are_named_by_their_share_and_checked(selection):
    rows = selection.share_strategies("0, 0.15,0.5", "failures")
    assert [(s.name, s.run) for s in rows] == [("failures-known-0", {"known_share": 0.0}),
                                               ("failures-known-0.15", {"known_share": 0.15}),
                                               ("failures-known-0.5", {"known_share": 0.5})]
    assert selection.share_strategies(None, "failures") == []
    for bad in ("1.0", "-0.1", "half"):
        with pytest.raises(SystemExit, match="--known-shares"):
            selection.share_strategies(bad, "failures")


def test_share_curve_orders_the_known_share_rows_and_plots_them(selection, tmp_path):
    rows = [row("failures", 0.05, 0, 0.40, 0.80), row("failures-known-0.5", 0.05, 0, 0.35, 0.89),
            row("failures-known-0.15", 0.05, 0, 0.41, 0.84), row("random", 0.05, 0, 0.30, 0.85),
            row("failures", 0.1, 0, 0.45, 0.75),  # one point at 10 %: no curve there
            row("teacher", 0.05, 0, 0.42, 0.81), row("teacher-known-0.5", 0.05, 0, 0.40, 0.88),
            row("failures-known", 0.05, 0, 0.39, 0.86)]  # the 0.3 row of STRATEGIES: not a --known-shares one
    curves = selection.knob_curve(selection.aggregate(rows), "-known-")
    assert sorted(curves) == [("failures", 0.05), ("teacher", 0.05)]
    assert [(share, e["strategy"]) for share, e in curves[("failures", 0.05)]] == [
        (0.0, "failures"), (0.15, "failures-known-0.15"), (0.5, "failures-known-0.5")]
    assert [(share, e["strategy"]) for share, e in curves[("teacher", 0.05)]] == [
        (0.0, "teacher"), (0.5, "teacher-known-0.5")]
    path = tmp_path / "curve.png"
    selection.plot_knob_curve("side-colour", curves, selection.KNOBS[0], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_anchor_rows_sit_on_the_known_row_and_make_their_own_curve(selection):
    strategies = selection.anchor_strategies("1, 3", "failures")
    assert [(s.name, s.run, s.lora) for s in strategies] == [
        ("failures-known-anchor1", {"known_share": selection.KNOWN_SHARE}, {"anchor_weight": 1.0}),
        ("failures-known-anchor3", {"known_share": selection.KNOWN_SHARE}, {"anchor_weight": 3.0})]
    for bad in ("0", "-1", "strong"):
        with pytest.raises(SystemExit, match="--anchor-weights"):
            selection.anchor_strategies(bad, "failures")
    rows = [row("failures-known", 0.05, 0, 0.49, 0.92), row("failures-known-anchor3", 0.05, 0, 0.46, 0.94),
            row("failures-known-anchor1", 0.05, 0, 0.46, 0.94), row("failures-known-0.5", 0.05, 0, 0.47, 0.93)]
    table = selection.aggregate(rows)
    assert [(w, e["strategy"]) for w, e in selection.knob_curve(table, "-anchor")[("failures-known", 0.05)]] == [
        (0.0, "failures-known"), (1.0, "failures-known-anchor1"), (3.0, "failures-known-anchor3")]
    assert list(selection.knob_curve(table, "-known-")) == [], "an anchor row is no point of the share curve"


def test_the_ceiling_row_sits_before_full_pool_with_its_label(selection, tmp_path):
    rows = [*ROWS, row("target-data", 0.05, 0, 0.90, 0.85), row("target-data", 0.05, 1, 0.80, 0.86)]
    table = selection.aggregate(rows)
    assert [e["strategy"] for e in table][-2:] == ["target-data", "full-pool"]
    assert table[-2]["test_accuracy"]["mean"] == pytest.approx(0.85)
    text = selection.markdown("side-colour", table, {"pool_size": 1000, "rounds": 2, "epochs": 3,
                              "batch_size": 16, "max_diagnoses": 8}, [], "cmd")
    assert "| target-data — the target's own samples (ceiling) | 5% (50) | 2 |" in text
    assert selection.TARGET_DATA_POLICY in text
    selection.plot("side-colour", table, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
