"""Streaming ingestion of pool/val/test files: parse, validate, check images, quarantine the rest.

Records may come in any form retrieval/formats.py reads (LLaVA, LLaMA-Factory's sharegpt, OpenAI/TRL
messages); each is validated into the canonical `Sample`, every one of its images checked.

``iter_samples`` yields one ``Accepted`` or ``Rejected`` per record and never holds the file in memory:
JSONL is read line by line, a JSON array is decoded element by element with ``raw_decode`` over a
buffered reader. A bad record never stops the run; it becomes a ``Rejected`` with a stable reason code
(``REASONS``), a human detail and the raw text, so counts reconcile: read = accepted + rejected.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from PIL import Image
from pydantic import ValidationError

from tutorloop.retrieval.formats import FormatError, to_canonical
from tutorloop.retrieval.images import image_bytes, is_table_ref
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.tables import is_table, iter_table_rows, table_root

log = logging.getLogger(__name__)

REASONS = (
    "bad_json",
    "not_utf8",
    "invalid_record",
    "text_too_long",
    "image_tag_mismatch",
    "duplicate_id",
    "image_outside_root",
    "image_missing",
    "image_unreadable",
    "image_too_large",
)
# PIL's own default (~89 Mpx); anything larger is treated as a decompression bomb, not an image.
DEFAULT_MAX_PIXELS = 89_478_485
RAW_KEEP_CHARS = 20_000  # a quarantine row keeps at most this much of the offending text
# An instruction sample's text beyond this is a broken record (a pasted file, a base64 blob), not an instruction:
# embedding it would cost seconds and gigabytes for nothing.
MAX_TEXT_CHARS = 65_536
_CHUNK_CHARS = 1 << 20
_MAX_RECORD_CHARS = 64 << 20  # one JSON-array element larger than this is treated as unreadable


@dataclass(frozen=True, slots=True)
class Accepted:
    line: int
    sample: Sample


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str
    detail: str
    raw: str

    def to_row(self) -> dict:
        return {"line": self.line, "reason": self.reason, "detail": self.detail, "raw": self.raw}


@dataclass
class IngestTally:
    """Counts of one ingestion run; ``read == accepted + sum(rejected.values())`` by construction."""

    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)

    def add(self, result: Accepted | Rejected) -> None:
        if isinstance(result, Accepted):
            self.accepted += 1
        else:
            self.rejected[result.reason] += 1

    @property
    def read(self) -> int:
        return self.accepted + self.rejected_total

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected_total,
            "by_reason": {reason: self.rejected.get(reason, 0) for reason in REASONS},
        }


class QuarantineWriter:
    """Appends rejected records as JSONL rows ``{"line", "reason", "detail", "raw"}``; a context manager."""

    def __init__(self, path: Path, source: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w", encoding="utf-8")
        self._source = str(source) if source is not None else None

    def write(self, rejected: Rejected) -> None:
        row = rejected.to_row()
        if self._source is not None:
            row["file"] = self._source
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def no_valid_record(path: Path, image_root: Path, quarantine: Path | None) -> ValueError:
    """The error for a pool of which no record is valid, its quarantine written: the reasons, counted, and an
    example of the commonest, so a file of another form is recognised from the message alone."""
    reasons: Counter = Counter()
    example: dict[str, Rejected] = {}
    with optional_quarantine(quarantine, path) as sink:
        for result in iter_samples(path, image_root, check_images=False):
            if isinstance(result, Rejected):
                reasons[result.reason] += 1
                example.setdefault(result.reason, result)
                if sink is not None:
                    sink.write(result)
    read = sum(reasons.values())
    if not read:
        return ValueError(f"{path}: the file holds no record; the index was left as it was")
    top, _ = reasons.most_common(1)[0]
    counted = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
    where = f"; every record with its reason in {quarantine}" if quarantine is not None else ""
    return ValueError(f"{path}: no valid record among {read} read ({counted}; line {example[top].line}: "
                      f"{example[top].detail}){where}; the index was left as it was")


@contextmanager
def optional_quarantine(path: Path | None, source: Path) -> Iterator[QuarantineWriter | None]:
    """A quarantine writer for ``path``, or None where no quarantine was asked for."""
    if path is None:
        yield None
        return
    with QuarantineWriter(path, source) as writer:
        yield writer


def default_image_root(path: Path | str) -> Path:
    """Image paths are relative to the data file's folder (a table folder's own) unless the user says otherwise."""
    return table_root(Path(path)) if is_table(Path(path)) else Path(path).resolve().parent


def iter_samples(
    path: Path | str,
    image_root: Path | str | None = None,
    *,
    check_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Accepted | Rejected]:
    """Stream the records of a JSONL file, a JSON array or a table (Parquet, a ``datasets`` folder),
    validated, one result per record (``line`` is the row number for a table)."""
    path = Path(path)
    if not path.is_file() and not is_table(path):
        raise FileNotFoundError(f"data file not found: {path}")
    root = Path(image_root).resolve() if image_root is not None else default_image_root(path)
    checker = _ImageChecker(root, max_pixels) if check_images else None
    seen_ids: set[str] = set()
    rows = iter_table_rows(path, root) if is_table(path) else _iter_raw_records(path)
    array = not is_table(path) and is_json_array(path)
    for ordinal, (line, raw, parsed) in enumerate(rows, start=1):
        yield _validate(line, raw, parsed, seen_ids, checker, fallback_id=fallback_id(path, ordinal if array else line))


def load_samples(path: Path | str, image_root: Path | str | None = None, *, check_images: bool = True) -> list[Sample]:
    """All accepted samples of a small file (val/test); warns per rejected record, fails if none is left."""
    samples: list[Sample] = []
    for result in iter_samples(path, image_root, check_images=check_images):
        if isinstance(result, Accepted):
            samples.append(result.sample)
        else:
            log.warning("%s:%d: rejected (%s): %s", path, result.line, result.reason, result.detail)
    if not samples:
        raise ValueError(f"{path}: no valid record (every record was rejected or the file is empty)")
    return samples


# ---------------------------------------------------------------------------------------------- validation

_NOT_PARSED = object()
_NOT_UTF8 = object()


def _validate(
    line: int, raw: str | Callable[[], str], parsed: object, seen_ids: set[str], checker: _ImageChecker | None,
    fallback_id: str | None = None,
) -> Accepted | Rejected:
    """One record validated; one without an ``id`` gets ``fallback_id`` (its place in the file, stable as table
    rows' ids are), so files written without ids (LLaMA-Factory's own) index as they are."""
    if parsed is _NOT_UTF8:
        return Rejected(line, "not_utf8", "the line is not valid UTF-8", _clip(_text(raw)))
    if parsed is _NOT_PARSED:
        return Rejected(line, "bad_json", _json_error(_text(raw)), _clip(_text(raw)))
    if fallback_id is not None and isinstance(parsed, dict) and "id" not in parsed:
        parsed = {**parsed, "id": fallback_id}
    try:
        canonical = to_canonical(parsed)  # any supported form (retrieval/formats.py) -> LLaVA's
        sample = Sample.model_validate(canonical)
    except FormatError as error:
        return Rejected(line, error.reason, error.detail, _clip(_text(raw)))
    except ValidationError as error:
        return Rejected(line, "invalid_record", _summarise(error), _clip(_text(raw)))
    chars = sum(len(turn.value) for turn in sample.conversations)
    if chars > MAX_TEXT_CHARS:
        return Rejected(line, "text_too_long", f"{chars} characters of text (at most {MAX_TEXT_CHARS})",
                        _clip(_text(raw)))
    if sample.id in seen_ids:
        return Rejected(line, "duplicate_id", f"id {sample.id!r} already seen earlier in the file", _clip(_text(raw)))
    for image in sample.images if checker is not None else []:
        problem = checker.check(image)
        if problem is not None:
            return Rejected(line, problem[0], problem[1], _clip(_text(raw)))
    # Only accepted ids count as seen: a later good copy of a rejected record is not a duplicate.
    seen_ids.add(sample.id)
    return Accepted(line, sample)


def _text(raw: str | Callable[[], str]) -> str:
    """A record's raw text; a table row gives a callable, made only when the row is rejected."""
    return raw() if callable(raw) else raw


def _summarise(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _json_error(raw: str) -> str:
    try:
        json.loads(raw)
    except json.JSONDecodeError as error:
        return f"invalid JSON: {error.msg} at column {error.colno}"
    except (UnicodeDecodeError, ValueError) as error:
        return f"invalid JSON: {error}"
    return "invalid JSON"


def _clip(raw: str) -> str:
    return raw if len(raw) <= RAW_KEEP_CHARS else raw[:RAW_KEEP_CHARS] + "…"


class _ImageChecker:
    """Path containment and a cheap decode check, cached per path (pools often share images)."""

    def __init__(self, root: Path, max_pixels: int) -> None:
        self.root = root
        self.max_pixels = max_pixels
        self.check = lru_cache(maxsize=8192)(self._check)
        # string forms for the per-image checks: os.path on str is ~2x cheaper than pathlib (measured 305 ->
        # ~200 us per image file on this machine; at 100k distinct images that is ~10 s of a 2-core run)
        self._root = os.fspath(root)
        self._prefix = self._root.rstrip(os.sep) + os.sep

    def _check(self, image: str) -> tuple[str, str] | None:
        if is_table_ref(image):
            return _check_cell(self.root, image, self.max_pixels)
        if os.path.isabs(image) or _DRIVE.match(image):
            return "image_outside_root", f"absolute image path {image!r}; paths are relative to the image root"
        # realpath() follows symlinks (as Path.resolve does), so a link pointing out of the root is caught too.
        resolved = os.path.realpath(os.path.join(self._root, image))
        if resolved != self._root and not resolved.startswith(self._prefix):
            return "image_outside_root", f"image {image!r} resolves to {resolved}, outside the image root {self.root}"
        if not os.path.isfile(resolved):
            return "image_missing", f"image {image!r} not found under {self.root}"
        return _check_decodable(resolved, image, self.max_pixels)


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _check_cell(root: Path, ref: str, max_pixels: int) -> tuple[str, str] | None:
    """An image stored in a table: its file inside the root, its bytes there and decodable."""
    try:
        data = image_bytes(root, ref)
    except ValueError as error:
        reason = "image_outside_root" if "outside the image root" in str(error) else "image_missing"
        return reason, str(error)
    except (OSError, IndexError, KeyError) as error:
        return "image_missing", f"image {ref!r} cannot be read from its table: {error}"
    return _check_decodable(io.BytesIO(data), ref, max_pixels)


def _check_decodable(path: str | Path | io.BytesIO, image: str, max_pixels: int) -> tuple[str, str] | None:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; a bomb must be an error, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    return "image_too_large", f"image {image!r} declares {width}x{height} pixels (> {max_pixels})"
                img.verify()  # reads the whole file and checks its structure without decoding pixels
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return "image_too_large", f"image {image!r}: {error}"
    except Exception as error:  # noqa: BLE001 - any decoder failure means the file is not a usable image
        # PIL names an in-memory file by its repr (an address): dropped, so the detail is the same every run
        message = re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", str(error))
        return "image_unreadable", f"image {image!r} cannot be read: {type(error).__name__}: {message}"
    return None


# ------------------------------------------------------------------------------------------------ parsing


def fallback_id(path: Path, position: int) -> str:
    """The id of a record that has none: ``<file stem>-<line>`` (JSONL), ``<file stem>-<n>`` (the n-th element of a
    JSON array, which may hold every record on one line)."""
    return f"{path.stem}-{position}"


def is_json_array(path: Path) -> bool:
    with path.open("rb") as probe:
        return probe.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _iter_raw_records(path: Path) -> Iterator[tuple[int, str, object]]:
    """(line, raw text, parsed value or _NOT_PARSED) per record, JSONL or JSON array by the first byte."""
    if is_json_array(path):
        yield from _iter_json_array(path)
    else:
        yield from _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str, object]]:
    with path.open("rb") as handle:
        for number, data in enumerate(handle, start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            if not data.strip():
                continue  # blank lines are not records
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, data.decode("utf-8", "replace").rstrip("\r\n"), _NOT_UTF8
                log.debug("line %d is not UTF-8: %s", number, error)
                continue
            text = text.rstrip("\r\n")
            try:
                yield number, text, json.loads(text)
            except json.JSONDecodeError:
                yield number, text, _NOT_PARSED


class _Buffer:
    """A sliding window over a text file that knows the line number of its cursor."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def fill(self) -> bool:
        """Drop consumed text, append one chunk; False at end of file."""
        if self.eof:
            return False
        chunk = self.handle.read(_CHUNK_CHARS)
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def advance(self, to: int) -> None:
        self.line += self.text.count("\n", self.pos, to)
        self.pos = to

    def skip_space(self) -> str:
        """Move past whitespace (reading more as needed); the next char, or '' at end of file."""
        while True:
            match = _NON_SPACE.search(self.text, self.pos)
            if match:
                self.advance(match.start())
                return self.text[self.pos]
            self.advance(len(self.text))
            if not self.fill():
                return ""

    def column(self) -> int:
        return self.pos - (self.text.rfind("\n", 0, self.pos) + 1)


_NON_SPACE = re.compile(r"\S")
_DECODER = json.JSONDecoder()


def _iter_json_array(path: Path) -> Iterator[tuple[int, str, object]]:
    # Invalid UTF-8 is replaced rather than fatal; the record then fails or passes on its content.
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        buf = _Buffer(handle)
        buf.skip_space()
        buf.advance(buf.pos + 1)  # the opening '['
        while True:
            char = buf.skip_space()
            if char in ("", "]"):
                return
            if char == ",":
                buf.advance(buf.pos + 1)
                continue
            yield _decode_element(buf)


def _decode_element(buf: _Buffer) -> tuple[int, str, object]:
    start_line, start_column = buf.line, buf.column()  # before a refill drops the text left of pos
    while True:
        try:
            value, end = _DECODER.raw_decode(buf.text, buf.pos)
        except json.JSONDecodeError:
            # Maybe the element only continues past the buffer: read on, within a bound.
            if len(buf.text) - buf.pos < _MAX_RECORD_CHARS and buf.fill():
                continue
            return start_line, _skip_bad_element(buf, start_column), _NOT_PARSED
        raw = buf.text[buf.pos : end]
        buf.advance(end)
        return start_line, raw, value


def _skip_bad_element(buf: _Buffer, column: int) -> str:
    """Resynchronise after a broken element: the next line that opens an object at the same indentation
    or less (records of a pretty-printed array align; their nested turns are indented deeper)."""
    pattern = re.compile(r"\n([ \t]*)(?=[{\]])")
    searched = 0  # chars after buf.pos already scanned (offsets move when the buffer refills)
    while True:
        for match in pattern.finditer(buf.text, buf.pos + searched):
            if len(match.group(1)) <= column:
                raw = buf.text[buf.pos : match.start()].rstrip().rstrip(",")
                buf.advance(match.end())
                return raw
        searched = max(0, len(buf.text) - buf.pos - 1)
        if searched >= _MAX_RECORD_CHARS or not buf.fill():
            raw = buf.text[buf.pos :].rstrip().rstrip("]").rstrip().rstrip(",")
            buf.advance(len(buf.text))
            return raw
