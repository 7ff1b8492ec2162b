"""A sample's image wherever it lives: a file under the image root, or bytes inside a Parquet / Arrow table.

Pools such as LLaVA-OneVision's data or The Cauldron ship their images as bytes in the table. Those bytes
stay where they are: a sample refers to one as ``parquet:<file>:<row>:<column>:<index>`` (or ``arrow:``
for a ``datasets.save_to_disk`` folder), with ``<file>`` relative to the image root, and `open_image` reads
just that row group when the image is needed. Every module that opens a sample's image goes through here,
so a path leaving the image root is refused in one place.
"""

from __future__ import annotations

import bisect
import io
import re
from functools import lru_cache
from pathlib import Path

from PIL import Image

TABLE_REF = re.compile(r"^(?P<kind>parquet|arrow):(?P<file>.+):(?P<row>\d+):(?P<column>[^:]+):(?P<index>\d+)$")


def table_ref(kind: str, file: str, row: int, column: str, index: int = 0) -> str:
    return f"{kind}:{file}:{row}:{column}:{index}"


def is_table_ref(ref: str) -> bool:
    return TABLE_REF.match(ref) is not None


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved (symlinks followed), refused when it leaves ``root``."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"image {relative!r} resolves to {path}, outside the image root {root}")
    return path


def image_bytes(root: Path, ref: str) -> bytes:
    """The encoded bytes of an image (a file's content, or the bytes stored in a table cell)."""
    match = TABLE_REF.match(ref)
    if match is None:
        return inside(root, ref).read_bytes()
    table = inside(root, match["file"])
    cell = _table_cell(str(table), match["kind"], int(match["row"]), match["column"])
    value = cell[int(match["index"])] if isinstance(cell, list) else cell
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"{ref}: the cell holds no image bytes")
    return bytes(data)


def open_image(root: Path, ref: str) -> Image.Image:
    """The image, opened (lazily decoded, as ``Image.open`` does); OSError/ValueError when unusable."""
    if TABLE_REF.match(ref) is None:
        return Image.open(inside(root, ref))
    return Image.open(io.BytesIO(image_bytes(root, ref)))


# --- tables ------------------------------------------------------------------------------------------


def _table_cell(path: str, kind: str, row: int, column: str) -> object:
    batch, offset = _row_batch(path, kind, row, column)
    return batch.column(column)[offset].as_py()


def _row_batch(path: str, kind: str, row: int, column: str):
    """The record batch (Parquet row group / Arrow batch) holding ``row``, and the row's offset in it."""
    starts = _batch_starts(path, kind)
    index = bisect.bisect_right(starts, row) - 1
    return _read_batch(path, kind, index, column), row - starts[index]


@lru_cache(maxsize=64)
def _batch_starts(path: str, kind: str) -> list[int]:
    starts, total = [], 0
    for rows in _batch_sizes(path, kind):
        starts.append(total)
        total += rows
    return starts


def _batch_sizes(path: str, kind: str) -> list[int]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    import pyarrow as pa

    return [batch.num_rows for batch in pa.ipc.open_stream(pa.memory_map(path))]


@lru_cache(maxsize=8)  # neighbouring rows share a batch: a handful stays decoded
def _read_batch(path: str, kind: str, index: int, column: str):
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).read_row_group(index, columns=[column])
    import pyarrow as pa

    # the map stays open: the batch's buffers point into it (no copy of the other rows' images)
    for i, batch in enumerate(pa.ipc.open_stream(pa.memory_map(path))):
        if i == index:
            return batch.select([column])
    raise IndexError(f"{path}: no batch {index}")
