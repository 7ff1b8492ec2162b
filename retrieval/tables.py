"""Pools stored as tables: Parquet files (or a folder of them) and `datasets.save_to_disk` folders.

Rows are streamed one record batch at a time (a Parquet row group, an Arrow batch), never a whole file.
An image cell — bytes, an HF ``Image`` struct ``{"bytes", "path"}``, a path, or a list of those — becomes
a reference (retrieval/images.py): bytes stay in the table as ``parquet:<file>:<row>:<column>:<i>``, a
path stays a path. A row without an ``id`` gets ``<file stem>-<row>``, stable across runs. The Cauldron's
``texts`` column (``[{"user", "assistant"}]``) becomes the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from tutorloop.retrieval.images import table_ref

IMAGE_COLUMNS = ("images", "image")
BATCH_ROWS = 256


def is_table(path: Path) -> bool:
    path = Path(path)
    return path.suffix == ".parquet" or (path.is_dir() and bool(table_files(path)))


def table_files(path: Path) -> list[tuple[str, Path]]:
    """(kind, file) of a Parquet file, a folder of Parquet files, or a ``save_to_disk`` folder."""
    path = Path(path)
    if path.is_file():
        return [("parquet", path)]
    state = path / "state.json"
    if state.is_file():
        names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        return [("arrow", path / name) for name in names]
    return [("parquet", p) for p in sorted(path.rglob("*.parquet"))]


def table_root(path: Path) -> Path:
    """The default image root of a table pool: the folder of the file, or the folder itself."""
    path = Path(path).resolve()
    return path if path.is_dir() else path.parent


def iter_table_rows(path: Path, image_root: Path) -> Iterator[tuple[int, Callable[[], str], object]]:
    """(row number, raw text for the quarantine, the row as a record dict) for every row of the table(s).
    The raw text is a callable: it is only needed for a rejected row, and making it for every row was a
    third of the parsing time (measured: ~45 of 136 us per row)."""
    number = 0
    for kind, file in table_files(path):
        for item in iter_file_rows(kind, file, image_root, first=number + 1):
            number = item[0]
            yield item


def iter_file_rows(kind: str, file: Path, image_root: Path, *, first: int = 1
                   ) -> Iterator[tuple[int, Callable[[], str], object]]:
    """The rows of one table file, numbered from ``first`` (a read task of `tutorloop index --ray` reads one)."""
    root = Path(image_root).resolve()
    relative = str(file.resolve().relative_to(root)) if file.resolve().is_relative_to(root) else None
    for row_in_file, row in enumerate(_rows(kind, file)):
        yield (first + row_in_file, partial(_raw, row, file.name, row_in_file),
               _record(row, kind, relative, file.stem, row_in_file))


def row_counts(path: Path) -> list[int]:
    """Rows per table file, from the files' metadata (no row is read)."""
    from tutorloop.retrieval.images import _batch_sizes

    return [sum(_batch_sizes(str(file), kind)) for kind, file in table_files(path)]


def _rows(kind: str, file: Path) -> Iterator[dict]:
    import pyarrow as pa

    if kind == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS)
    else:
        batches = pa.ipc.open_stream(pa.memory_map(str(file)))
    for batch in batches:
        yield from batch.to_pylist()


def _record(row: dict, kind: str, relative: str | None, stem: str, row_in_file: int) -> dict:
    record = dict(row)
    record.setdefault("id", f"{stem}-{row_in_file}")
    if "conversations" not in record and "messages" not in record and isinstance(record.get("texts"), list):
        turns = []
        for pair in record.pop("texts"):
            turns += [{"from": "human", "value": pair.get("user", "")}, {"from": "gpt", "value": pair.get("assistant", "")}]
        record["conversations"] = turns
    for column in IMAGE_COLUMNS:
        if column in record:
            record[column] = _image_refs(record[column], kind, relative, column, row_in_file)
    if isinstance(record.get("image"), list):  # one image column, several images: LLaVA's list form
        record["images"] = record.pop("image")
    return record


def _image_refs(cell: object, kind: str, relative: str | None, column: str, row: int) -> object:
    values = cell if isinstance(cell, list) else [cell]
    refs = []
    for i, value in enumerate(values):
        data = value.get("bytes") if isinstance(value, dict) else value if isinstance(value, bytes) else None
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        if data is not None and relative is not None:
            refs.append(table_ref(kind, relative, row, column, i))
        elif path:
            refs.append(path)
        elif value is not None:
            refs.append(f"<unreadable cell {i} of {column}>")  # rejected by the image check, with its reason
    if not refs:
        return None
    return refs[0] if not isinstance(cell, list) else refs


def _raw(row: dict, file_name: str, row_in_file: int) -> str:
    """The row as text for a person (image bytes shown as their size), naming the file and row."""
    def shown(value: object) -> object:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        return value

    return json.dumps({"_file": file_name, "_row": row_in_file, **{k: shown(v) for k, v in row.items()}}, default=str)
