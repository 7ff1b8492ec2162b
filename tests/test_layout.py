"""The shape of the code that docs/architecture.md promises: checked, so it stays true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("agents", "retrieval", "training", "prompts", "demo")
PACKAGES = (*PRODUCT, "lab", "benchmarks", "tests")


def _python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_module_the_architecture_names_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:agents|retrieval|training|prompts|demo)/[\w/]+\.py)", text))
    assert len(named) > 20
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_only_the_run_directory_module_spells_a_round_path():
    pattern = re.compile(r"""round_(\d\d|\{|\*|\[)""")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in _python_files() if p != ROOT / "agents" / "run_dir.py"
                 for i, line in enumerate(p.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not offenders, f"round_ paths outside agents/run_dir.py: {offenders}"


def test_only_the_cli_imports_the_command_modules():
    pattern = re.compile(r"^\s*(from|import)\s+tutorloop\.agents\.cmd_", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in _python_files()
                 if p != ROOT / "agents" / "cli.py" and pattern.search(p.read_text())]
    assert not offenders, f"modules importing agents.cmd_*: {offenders}"


def test_retrieval_imports_nothing_of_training_or_agents():
    pattern = re.compile(r"^\s*(from|import)\s+tutorloop\.(training|agents)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "retrieval").rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_one_atomic_writer():
    """Nothing but retrieval/files.py renames a temporary file over its target."""
    pattern = re.compile(r"os\.replace\(|\.replace\(path\)|tmp\.rename\(|\.tmp\"\)")
    offenders = [str(p.relative_to(ROOT)) for p in _python_files() if "tests" not in p.relative_to(ROOT).parts
                 and p != ROOT / "retrieval" / "files.py" and pattern.search(p.read_text())]
    assert not offenders, f"atomic writes outside retrieval/files.py: {offenders}"


def test_the_product_never_imports_the_lab():
    pattern = re.compile(r"^\s*(from|import)\s+(lab|benchmarks|tests)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for package in PRODUCT for p in (ROOT / package).rglob("*.py")
                 if pattern.search(p.read_text())]
    assert not offenders, f"product modules importing the lab: {offenders}"


def test_the_product_speaks_only_of_itself():
    """No line of the product or its manual names an issue, a work period ("stop 14") or a session."""
    pattern = re.compile(r"\bstop [0-9]+|\bissue [0-9]+|\bwork period", re.IGNORECASE)
    files = [p for package in PRODUCT for p in (ROOT / package).rglob("*") if p.suffix in {".py", ".txt", ".yaml", ".html"}]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in [*files, ROOT / "README.md"]
                 for i, line in enumerate(p.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not offenders, f"lines naming issues, stops or sessions: {offenders}"
