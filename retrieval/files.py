"""Files that appear whole or not at all: the one atomic writer every module uses.

A file is written to a temporary sibling, flushed to disk and renamed over its target, so a reader (or a
resumed run asking "is this artefact done?") never sees half of one. JSON and JSONL helpers sit on top.
This lives in ``retrieval`` because it is the bottom layer: ``training``, ``agents`` and ``demo`` all
import it, and it imports nothing of theirs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """``durable=False`` skips the fsync (the rename still makes the file appear whole): for many small files
    of one batch, whose writer calls ``os.sync()`` once before it writes the batch's "done" marker."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600: give it the mode any other new file gets
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    atomic_write_text(path, json.dumps(data, indent=2, default=str, sort_keys=sort_keys) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict]) -> None:
    lines = (r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, default=str) for r in rows)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
