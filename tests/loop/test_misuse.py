"""`tutorloop run` used wrongly, as a new user would: each mistake ends with one line naming the flag, file or
URL and what to do, a non-zero exit code and no traceback; an interrupted run says where to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tutorloop.agents.records import RunInfo
from tutorloop.agents.run_dir import SELECTED, RunDir

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tutorloop.agents.cli", "run", *args], env=_env(),
                          capture_output=True, text=True, timeout=300)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("tutorloop run:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def _world_args(world, out: Path) -> list[str]:
    return ["--student", str(world.student), "--val", str(world.val), "--store", str(world.store), "--budget", "6",
            "--rounds", "1", "--out", str(out)]


def test_missing_flags_and_a_zero_budget_name_the_flags(tmp_path):
    result = _run("--budget", "0", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    line = _one_line(result)
    assert "--student is required" in line and "--val is required" in line and "--budget" in line
    assert "pydantic" not in result.stderr and "input_value" not in result.stderr


def test_a_wrong_path_names_the_flag_and_the_file(tiny_world, tmp_path):
    args = _world_args(tiny_world, tmp_path / "run")
    args[args.index("--val") + 1] = str(tmp_path / "nope.jsonl")
    result = _run(*args, "--selector", "failures")
    assert result.returncode == 2 and f"--val {tmp_path / 'nope.jsonl'}: no such file" in _one_line(result)
    assert not (tmp_path / "run").exists(), "nothing was started"


def test_a_teacher_that_does_not_answer_stops_the_run_before_it_starts(tiny_world, tmp_path):
    result = _run(*_world_args(tiny_world, tmp_path / "run"), "--selector", "teacher",
                  "--teacher", "http://127.0.0.1:9/v1")
    assert result.returncode == 2
    line = _one_line(result)
    assert "http://127.0.0.1:9/v1" in line and "--selector failures" in line
    assert not RunDir(tmp_path / "run").exists()


def test_resuming_with_other_defining_settings_is_refused(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures")
    RunDir(config.out).write_info(RunInfo(run_id="r", config=config.model_dump(mode="json")))
    result = _run("--out", str(config.out), "--selector", "random", "--budget", "50")
    assert result.returncode == 2
    line = _one_line(result)
    assert "--selector failures → random" in line and "--budget 12 → 50" in line and "new --out" in line
    assert RunDir(config.out).read_info().config["selector"] == "failures", "run.json is left as it was"


def test_ctrl_c_stops_at_once_and_says_where_to_resume(tiny_world, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "tutorloop.agents.cli", "run",
                                *_world_args(tiny_world, out), "--selector", "failures",
                                "--fixed-epochs", "--epochs", "60"],  # training outlasts the poll on a busy machine
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not RunDir(out).has(1, SELECTED):  # interrupt in round 1's training
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert f"interrupted in round 1, train; resume with: tutorloop run --out {out}" in stderr
    resumed = _run("--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at round 1, train" in resumed.stderr


def test_argument_errors_are_answered_before_torch_loads(tmp_path):
    """What makes an argument error take seconds is importing the model stack; the check must come first."""
    code = ("import sys; from tutorloop.agents.cli import main; "
            f"rc = main(['run', '--budget', '0', '--out', {str(tmp_path / 'run')!r}]); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'qdrant_client', 'sklearn', 'openai') "
            "if m in sys.modules); print('rc', rc, 'loaded', heavy)")
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "rc 2 loaded []", result.stdout + result.stderr[-2000:]
