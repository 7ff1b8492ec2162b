"""Crash-resume: a `tutorloop run` subprocess SIGKILLed mid-run, resumed with only `--out`, ends with
the same selections as an uninterrupted run — no sample selected twice, no round lost. And a kill between
any two writes of a node leaves nothing behind that a resume cannot finish."""

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

from tutorloop.agents.api import run
from tutorloop.agents.run_dir import DIAGNOSES, METRICS, PLAN, SCORED, SELECTED, RunDir

pytestmark = pytest.mark.integration


def _start(args: list[str]) -> subprocess.Popen:
    # the torch threads of the in-process reference run (tests/conftest.py): sums reduced over another number of
    # threads round differently, and on some CPUs that changes which failures round 0 sees (the selection)
    threads = os.environ.get("TUTORLOOP_TEST_THREADS", "1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": threads}
    return subprocess.Popen([sys.executable, "-m", "tutorloop.agents.cli", "run", *args], env=env,
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
    return [[r.sample.id for r in RunDir(out).read(n, SELECTED)] for n in (1, 2)]


@pytest.fixture(scope="module")
def reference(tiny_world, loop_config, tmp_path_factory):
    config = loop_config(tiny_world, tmp_path_factory.mktemp("resume") / "reference", selector="failures")
    run(config, run_id="reference")
    return config


@pytest.mark.parametrize("kill_after", [
    (1, SELECTED),  # killed in round 1's training
    pytest.param((2, PLAN), marks=pytest.mark.slow),  # killed in round 2's selection
])
def test_killed_run_resumes_to_the_same_selections(reference, tmp_path, kill_after):
    crashed = reference.model_copy(update={"out": tmp_path / "crashed"})
    (tmp_path / "cfg.json").write_text(json.dumps(crashed.model_dump(mode="json")))
    process = _start(["--config", str(tmp_path / "cfg.json"), "--out", str(crashed.out)])
    _kill_when(process, RunDir(crashed.out).path(*kill_after))
    assert not RunDir(crashed.out).has(2, METRICS), "killed too late to test a resume"

    resumed = _start(["--out", str(crashed.out)])
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    assert b"resuming run" in stderr

    assert _selections(crashed.out) == _selections(reference.out)
    flat = [i for ids in _selections(crashed.out) for i in ids]
    assert len(flat) == len(set(flat)) == 12
    summary = RunDir(crashed.out).read_summary()
    assert [r.round for r in summary.rounds] == [1, 2]
    assert summary.final == RunDir(reference.out).read_summary().final


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
    run_dir = RunDir(crashed)
    for path in (crashed / "summary.json", run_dir.adapter(1), run_dir.path(1, METRICS), run_dir.folder(2)):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    config = reference.model_copy(update={"out": crashed})
    run(config, run_id="reference")

    assert _selections(crashed) == _selections(reference.out)
    assert [r.round for r in run_dir.read_summary().rounds] == [1, 2]


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after the write runs (not even except clauses)."""


@pytest.mark.parametrize("artefact", [
    SELECTED, pytest.param(SCORED, marks=pytest.mark.slow), pytest.param(DIAGNOSES, marks=pytest.mark.slow)])
def test_a_kill_right_after_any_write_of_the_select_node_resumes_to_the_reference(
        reference, tmp_path, monkeypatch, artefact):
    """The select node writes scored.jsonl, links the diagnoses to the selection, and writes selected.jsonl
    (its "done" marker). A kill right after any of these writes, resumed, must give the reference run's
    files — the diagnoses linked to what their gaps selected included (the old order wrote selected.jsonl
    before the diagnoses' links, so a kill between the two left them unlinked for good)."""
    config = reference.model_copy(update={"out": tmp_path / "crashed"})
    target = RunDir(config.out).path(1, artefact)
    real_replace, writes = os.replace, []

    def replace_then_die(src, dst, *args, **kwargs):  # the commit point of every atomic write
        real_replace(src, dst, *args, **kwargs)
        if Path(dst) == target:
            writes.append(dst)
            if artefact is not DIAGNOSES or len(writes) == 2:  # diagnoses: the select node's rewrite
                raise Killed

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        run(config, run_id="killed")
    monkeypatch.setattr(os, "replace", real_replace)
    run(config, run_id="killed")

    crashed, expected = RunDir(config.out), RunDir(reference.out)
    assert crashed.read(1, SELECTED) == expected.read(1, SELECTED)
    linked = [row.selected_ids for row in crashed.read(1, DIAGNOSES)]
    assert linked == [row.selected_ids for row in expected.read(1, DIAGNOSES)]
    assert set().union(*linked) == set(_selections(config.out)[0])


def test_a_run_from_before_the_held_out_stop_resumes_with_its_fixed_epochs(tiny_world, loop_config, tmp_path):
    from tutorloop.agents.config import RunConfig
    from tutorloop.agents.records import RunInfo

    config = loop_config(tiny_world, tmp_path / "run").model_dump(mode="json")
    old = {**config, "lora": {k: v for k, v in config["lora"].items() if k not in ("early_stop", "min_gain")}}
    resumed = RunConfig.model_validate(RunInfo(run_id="r", config=old).config)
    assert resumed.lora.early_stop is False and resumed.lora.epochs == config["lora"]["epochs"]
    # a run written now keeps what it says
    assert RunConfig.model_validate(RunInfo(run_id="r", config=config).config).lora.early_stop is True


def test_a_run_from_before_anchoring_resumes_without_anchors(tiny_world, loop_config, tmp_path):
    from tutorloop.agents.config import RunConfig
    from tutorloop.agents.records import RunInfo

    config = loop_config(tiny_world, tmp_path / "run", lora={"anchor_weight": 1.0}).model_dump(mode="json")
    old = {**config, "lora": {k: v for k, v in config["lora"].items() if not k.startswith("anchor")}}
    assert RunConfig.model_validate(RunInfo(run_id="r", config=old).config).lora.anchor_weight == 0.0
    assert RunConfig.model_validate(RunInfo(run_id="r", config=config).config).lora.anchor_weight == 1.0


def test_a_run_from_before_the_forgetting_bound_resumes_with_its_whole_adapters(tiny_world, loop_config, tmp_path):
    from tutorloop.agents.config import RunConfig
    from tutorloop.agents.records import RunInfo

    config = loop_config(tiny_world, tmp_path / "run").model_dump(mode="json")
    old = {k: v for k, v in config.items() if k not in ("known_on_top", "max_forgetting", "operating_points",
                                                         "probe_size")}
    resumed = RunConfig.model_validate(RunInfo(run_id="r", config=old).config)
    assert (resumed.known_on_top, resumed.operating_points, resumed.max_forgetting, resumed.probe_size) == \
        (False, [], None, 0)
    assert RunConfig.model_validate(RunInfo(run_id="r", config=config).config).operating_points
