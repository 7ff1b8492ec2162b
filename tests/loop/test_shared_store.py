"""Two runs on one embedded index at once: each holds the store only while it reads it, so both finish, with
the selections they make when run one after the other."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tutorloop.agents.run_dir import SELECTED, RunDir

pytestmark = pytest.mark.integration


def _start(world, seed: int, out) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    args = ["--student", str(world.student), "--val", str(world.val), "--store", str(world.store), "--budget", "6",
            "--rounds", "1", "--selector", "failures", "--seed", str(seed), "--probe-size", "20", "--out", str(out)]
    return subprocess.Popen([sys.executable, "-m", "tutorloop.agents.cli", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    assert "WouldBlock" not in stderr


def test_two_runs_share_one_store(tiny_world, tmp_path):
    together = [_start(tiny_world, seed, tmp_path / f"together-{seed}") for seed in (0, 1)]
    for process in together:
        _finish(process)
    for seed in (0, 1):
        _finish(_start(tiny_world, seed, tmp_path / f"alone-{seed}"))
        alone = [r.sample.id for r in RunDir(tmp_path / f"alone-{seed}").read(1, SELECTED)]
        assert alone and [r.sample.id for r in RunDir(tmp_path / f"together-{seed}").read(1, SELECTED)] == alone
