"""Crash-resume: a `tutorloop run` subprocess SIGKILLed mid-run, resumed with only `--out`, ends with
the same selections as an uninterrupted run — no sample selected twice, no round lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.cmd_run import execute
from agents.run_dir import read_json, read_jsonl

pytestmark = pytest.mark.integration


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "agents.cli", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _kill_when(process: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, f"run ended before {marker.name} appeared: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{marker} did not appear in {timeout} s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _selections(out: Path) -> list[list[str]]:
    return [[r["id"] for r in read_jsonl(out / f"round_{n:02d}" / "selected.jsonl")] for n in (1, 2)]


@pytest.fixture(scope="module")
def reference(tiny_world, loop_config, tmp_path_factory):
    config = loop_config(tiny_world, tmp_path_factory.mktemp("resume") / "reference", selector="failures")
    execute(config, run_id="reference")
    return config


@pytest.mark.parametrize("kill_after", [
    "round_01/selected.jsonl",  # killed in round 1's training
    pytest.param("round_02/gaps.json", marks=pytest.mark.slow),  # killed in round 2's retrieval
])
def test_killed_run_resumes_to_the_same_selections(reference, tmp_path, kill_after):
    crashed = reference.model_copy(update={"out": tmp_path / "crashed"})
    (tmp_path / "cfg.json").write_text(json.dumps(crashed.model_dump(mode="json")))
    process = _start(["--config", str(tmp_path / "cfg.json"), "--out", str(crashed.out)])
    _kill_when(process, crashed.out / kill_after)
    assert not (crashed.out / "round_02" / "metrics.json").exists(), "killed too late to test a resume"

    resumed = _start(["--out", str(crashed.out)])
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    assert b"resuming run" in stderr

    assert _selections(crashed.out) == _selections(reference.out)
    flat = [i for ids in _selections(crashed.out) for i in ids]
    assert len(flat) == len(set(flat)) == 12
    summary = read_json(crashed.out / "summary.json")
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["final"] == read_json(reference.out / "summary.json")["final"]


def test_kill_between_a_nodes_writes_and_the_next_checkpoint_resumes(reference, tmp_path):
    """The narrowest crash window: round 1's rerank finished and its writes were saved, the checkpoint after
    it was not. LangGraph leaves such a finished task out of ``next``; the run must still go on."""
    crashed = tmp_path / "crashed"
    shutil.copytree(reference.out, crashed)
    with sqlite3.connect(crashed / "checkpoints.sqlite") as db:
        rows = db.execute("SELECT checkpoint_id, metadata FROM checkpoints ORDER BY checkpoint_id").fetchall()
        wrote = {c for (c,) in db.execute("SELECT checkpoint_id FROM writes WHERE channel = 'branch:to:train'")}
        cut = next(c for c, _ in rows if c in wrote)  # the first rerank: its writes kept, nothing after it
        db.execute("DELETE FROM checkpoints WHERE checkpoint_id > ?", (cut,))
        db.execute("DELETE FROM writes WHERE checkpoint_id > ?", (cut,))
    for later in ("summary.json", "round_01/adapter", "round_01/metrics.json", "round_02"):
        path = crashed / later
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    config = reference.model_copy(update={"out": crashed})
    execute(config, run_id="reference")

    assert _selections(crashed) == _selections(reference.out)
    assert [r["round"] for r in read_json(crashed / "summary.json")["rounds"]] == [1, 2]
