"""Checks a run passes before any model is loaded: every mistake a person can make on the command line is
answered in under a second, in one line that names the flag, file or URL and says what to do.

- ``config_error``: a pydantic validation error as ``--flag: what is wrong``, one line per field.
- ``check_paths``: the student, data files and store named by the config exist.
- ``check_resume``: a run directory is resumed only with the settings that define it.
- ``check_teacher``: a teacher run's endpoint answers (``GET /models``) before round 0 is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

# the settings that make a run what it is: resuming it with other values would mix two experiments
DEFINING = ("student", "val", "test", "generic", "store", "qdrant_url", "collection", "selector", "budget", "seed")


class PreflightError(ValueError):
    """A run refused before it started; the message is one line a person can act on."""


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def config_error(error: ValidationError) -> str:
    """``--budget: Input should be greater than 0 (got 0)``, one clause per failing field."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "missing":
            parts.append(f"{flag(where)} is required")
            continue
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        if not where:  # a rule over several settings: its message names them
            parts.append(message)
            continue
        name = where if "." in where else flag(where)  # a nested setting has no flag: its config path
        parts.append(f"{name}: {message}{shown}")
    return "; ".join(parts)


def check_paths(config: Any) -> None:
    """The files and folders a run reads exist (the student may also be a model id in the local HF cache)."""
    for field in ("val", "test", "generic"):
        path = getattr(config, field)
        if path is not None and not Path(path).is_file():
            raise PreflightError(f"{flag(field)} {path}: no such file")
    student = Path(config.student)
    if not student.exists() and (student.is_absolute() or str(student).startswith(".") or student.suffix
                                 or len(student.parts) != 2):
        raise PreflightError(f"--student {student}: no such model folder (give a folder in Hugging Face format)")
    if student.is_dir() and not (student / "config.json").is_file():
        raise PreflightError(f"--student {student}: no config.json in that folder (is it a Hugging Face model?)")
    if config.store is not None and not Path(config.store).is_dir():
        raise PreflightError(f"--store {config.store}: no index there; build one with: tutorloop index --pool FILE "
                             f"--store {config.store}")


def check_resume(stored: dict[str, Any], given: dict[str, Any], out: Path) -> None:
    """Refuse to resume ``out`` with defining settings other than those it was started with."""
    differ = [f"{flag(k)} {stored.get(k)} → {given[k]}" for k in DEFINING
              if given.get(k) is not None and str(given[k]) != str(stored.get(k))]
    if differ:
        raise PreflightError(f"{out} holds a run started with other settings ({'; '.join(differ)}); give a new --out "
                             "to start another run, or drop those flags to resume it")


def check_teacher(base_url: str, api_key: str | None, timeout_s: float = 10.0) -> None:
    """One ``GET /models`` to the teacher endpoint: refuse a run whose teacher does not answer."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise PreflightError(f"the teacher at {base_url} does not answer ({type(error).__name__}: {error}); start it "
                             "(vllm serve MODEL --served-model-name teacher) and give its URL with --teacher, or "
                             "run without one: --selector failures") from None
    if response.status_code >= 400:
        raise PreflightError(f"the teacher at {base_url} answered GET /models with HTTP {response.status_code}; "
                             "check --teacher and OPENAI_API_KEY, or run without one: --selector failures")
