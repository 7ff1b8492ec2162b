"""Crash-resume: a `tutorloop run` subprocess SIGKILLed mid-run, resumed with only `--out`, ends with
the same selections as an uninterrupted run — no sample selected twice, no round lost."""

from __future__ import annotations

import json
import os
import signal
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


@pytest.mark.parametrize("kill_after", [
    "round_01/selected.jsonl",  # killed in round 1's training
    pytest.param("round_02/gaps.json", marks=pytest.mark.slow),  # killed in round 2's retrieval
])
def test_killed_run_resumes_to_the_same_selections(tiny_world, loop_config, tmp_path, kill_after):
    reference = loop_config(tiny_world, tmp_path / "reference", selector="failures")
    execute(reference, run_id="reference")

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
