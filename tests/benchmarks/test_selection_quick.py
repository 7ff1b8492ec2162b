"""The selection benchmark end to end in --quick mode (a tiny world, a random tiny student): every
strategy gets a row with numbers, and the JSON, markdown and PNG are written. A few CPU minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.integration
def test_quick_benchmark_writes_every_row(tmp_path):
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection.py"), "--quick", "--out", str(tmp_path / "runs"),
         "--results", str(results), "--target-data"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((results / "selection-side-colour.json").read_text())
    strategies = {row["strategy"] for row in data["rows"]}
    expected = {"zero-shot", "random", "failures", "full-pool", "target-data", "oracle-map"}  # oracle: no model
    from tutorloop.agents.cpu_teacher import cpu_teacher_available

    if cpu_teacher_available():
        expected |= {"teacher", "teacher-map", "teacher-no-perturbation", "teacher-no-clusters"}  # no-replay: 1 round
    else:
        assert any("teacher rows skipped" in note for note in data["notes"])
    assert expected <= strategies
    for row in data["rows"]:
        for key in ("test_accuracy", "generic_accuracy", "noise_share", "on_target_share"):
            assert 0.0 <= row[key] <= 1.0, (row["strategy"], key, row[key])
        assert row["seconds"]["training"] >= 0 and row["seconds"]["selection"] >= 0
        if row["strategy"].endswith("-known"):  # the random student knows nothing: only the gaps' share
            assert row["budget"] == 30 and row["selected"] <= 30
        elif row["strategy"] == "target-data":  # 30 fresh samples of the target itself, none from the pool
            assert row["selected"] == row["budget"] == 30 and row["by_source"] == {"side_colour-v1": 30}
            assert row["on_target_share"] == 1.0
        elif row["strategy"] not in {"zero-shot", "full-pool"}:
            assert row["selected"] == row["budget"] == 30  # 5% of 600, all spent
            assert sum(row["by_source"].values()) == row["selected"]
    full = next(r for r in data["rows"] if r["strategy"] == "full-pool")
    assert full["selected"] == data["settings"]["pool_count"] == 600
    md = (results / "selection-side-colour.md").read_text()
    assert all(f"| {name} |" in md for name in expected - {"oracle-map", "target-data"})
    assert "| oracle-map — oracle (upper bound) |" in md  # never shown without its label
    oracle = next(r for r in data["rows"] if r["strategy"] == "oracle-map")
    assert oracle["diagnosis_right"] == 1.0  # the world's ground truth, through the map it named
    assert oracle["seconds"]["skill_map_amortised"] > 0
    assert (results / "selection-side-colour.png").read_bytes()[:4] == b"\x89PNG"

    again = subprocess.run(  # complete runs are reused: the second call trains nothing
        [sys.executable, str(ROOT / "benchmarks" / "selection.py"), "--quick", "--out", str(tmp_path / "runs"),
         "--results", str(results), "--teacher", "none", "--target-data"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "running " not in again.stderr and "full pool: training" not in again.stderr
    assert "target data: training" not in again.stderr
