"""What `pip install tutorloop` puts on a machine: one import name, `tutorloop`, beside other packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("agents", "retrieval", "training", "prompts", "demo")


def _wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, cwd=out)
    return next(out.glob("tutorloop-*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # a stale build/ folder would leak old names into the wheel
    try:
        return _wheel(tmp_path_factory.mktemp("wheel"))
    finally:
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"tutorloop"}
    for package in PRODUCT:
        assert f"tutorloop/{package}/__init__.py" in names
    assert "tutorloop/prompts/diagnose_system.txt" in names and "tutorloop/agents/report.html" in names
    assert any(n.startswith("tutorloop/demo/students/") and n.endswith("model.safetensors") for n in names)
    assert not any(n.startswith(("tutorloop/tests", "tutorloop/benchmarks", "tutorloop/lab")) for n in names)
    assert not any(n.endswith("architectures.py") for n in names), "tiny test architectures are the lab's"


@pytest.mark.slow
@pytest.mark.integration
def test_the_wheel_installs_beside_openai_agents(wheel, tmp_path):
    """A clean venv with our wheel (its heavy dependencies left out: the import names are what is checked) and
    openai-agents, whose top-level package is also called `agents`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, "openai-agents", "pydantic", "pyyaml"], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def python_c(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)

    theirs = python_c("import agents; print(agents.Agent.__name__)")
    assert theirs.returncode == 0 and theirs.stdout.strip() == "Agent", theirs.stderr
    ours = python_c("import tutorloop.agents.cli as cli, tutorloop.prompts.render as r; print(cli.COMMANDS['run'])")
    assert ours.returncode == 0 and ours.stdout.strip() == "tutorloop.agents.cmd_run", ours.stderr
    for name in ("training", "retrieval", "demo", "prompts"):
        assert python_c(f"import {name}").returncode != 0, f"`import {name}` works after installing tutorloop"
    version = subprocess.run([str(venv / "bin" / "tutorloop"), "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("tutorloop "), version.stderr
