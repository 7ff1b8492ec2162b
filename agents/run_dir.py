"""The run directory: where every artefact of a run lives, written atomically.

Layout (design.md): ``summary.json``, ``run.json`` (config + run id), ``checkpoints.sqlite`` and one
``round_NN/`` per round. ``round_00/`` holds the evaluation of the student as given; ``round_NN/``
(N >= 1) holds what round N did — ``diagnoses.jsonl``, ``gaps.json``, ``candidates.jsonl``,
``scored.jsonl``, ``selected.jsonl``, ``adapter/`` — and the evaluation after it: ``eval.jsonl``
(validation), ``eval_test.jsonl``, ``eval_generic.jsonl`` and ``metrics.json``.
Because a file appears only once complete, "does the artefact exist" is how a resumed node knows its
work is already done.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def round(self, number: int) -> Path:
        path = self.root / f"round_{number:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rounds_done(self) -> list[int]:
        """Round numbers (0 = before any training) whose evaluation is complete."""
        return sorted(int(p.parent.name[6:]) for p in self.root.glob("round_*/metrics.json"))

    def selected_ids(self, upto: int) -> list[str]:
        """Ids trained on in rounds 1..upto, in selection order."""
        return [row["id"] for n in range(1, upto + 1) for row in read_jsonl(self.round(n) / "selected.jsonl")]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict]) -> None:
    lines = (r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, default=str) for r in rows)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
