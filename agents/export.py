"""A run's selection as a folder an outside trainer reads as is: ``selected.jsonl`` beside ``images/``.

A table pool (Parquet, a ``datasets`` folder) keeps its images as bytes inside the table, and a selected
sample points at them as ``parquet:<file>:<row>:<column>:<i>`` (retrieval/images.py). LLaVA, LLaMA-Factory
and TRL cannot open that, and a file pool's paths are relative to an image root the trainer does not know.
`export_run` writes, for the chosen rounds of a run::

    DIR/selected.jsonl   every selected sample, in its own form or the one asked for, with its "selection"
                         (the why of agents/records.py's SelectedSample, plus the round it was chosen in)
    DIR/images/<path>    a pool file image, copied under its path relative to the pool's image root (a path
                         that begins with images/ already keeps it once: images/x.png, not images/images/x.png)
    DIR/images/by-hash/<sha256>.<ext>   a table image: its bytes as stored (not re-encoded), named by content
    DIR/export.json      what was exported and the counts; written first (as unfinished) and last

Image paths in the records are relative to DIR, so ``retrieval.ingest.load_samples(DIR / "selected.jsonl")``
reads the folder back with DIR as its image root. Every file is written atomically (retrieval/files.py);
the images without a flush each (an fsync per small file was two thirds of an export's time) and one
``os.sync()`` before the manifest is marked complete, so a complete manifest means the images are on disk.
Re-running into the same folder overwrites it: unchanged images are kept, images no longer selected are
removed. A folder that is not empty and is not an export (no ``export.json``) is refused, so a mistyped
``--out`` never prunes somebody's own images.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from pydantic import BaseModel, Field

from tutorloop.agents.records import SelectedSample
from tutorloop.agents.run_dir import SELECTED, RunDir
from tutorloop.retrieval.files import atomic_write_bytes, read_json, write_json, write_jsonl
from tutorloop.retrieval.formats import FORMS
from tutorloop.retrieval.images import TABLE_REF, image_bytes, inside

SELECTED_FILE = "selected.jsonl"
IMAGES = "images"
BY_HASH = "by-hash"  # table images: a name no pool path is likely to have (a clash is refused, not overwritten)
MANIFEST = "export.json"
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tif"}  # PIL's format name -> the usual suffix


class ExportError(ValueError):
    """An export that cannot be made as asked: the message says which file, round or sample and why."""


class RoundCount(BaseModel):
    round: int
    samples: int
    images: int = Field(description="image references of the round's samples (a shared image counts each time)")


class ExportReport(BaseModel):
    """``export.json``: what an export folder holds; ``complete`` is false while it is being written."""

    run_dir: str
    image_root: str | None
    form: str | None = Field(description="the form asked for; None: each sample in the form it was selected in")
    rounds: list[RoundCount] = Field(default_factory=list)
    samples: int = 0
    images: int = Field(0, description="distinct image files in images/")
    written: int = Field(0, description="image files written by this export (the rest were already there, equal)")
    removed: int = Field(0, description="stale files of an earlier export removed from images/")
    bytes: int = Field(0, description="total size of the files in images/")
    complete: bool = False


def parse_rounds(value: str | int) -> str | int:
    """``all`` or a round count N >= 1 (rounds 1..N: what the student had trained on after N rounds)."""
    if value == "all":
        return "all"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ExportError(f"--rounds must be 'all' or a number of rounds, got {value!r}") from None
    if number < 1:
        raise ExportError(f"--rounds must be at least 1 (round 0 selects nothing), got {number}")
    return number


def export_run(run_dir: Path, out: Path, *, form: str | None = None, rounds: str | int = "all",
               image_root: Path | None = None, progress: bool = False) -> ExportReport:
    """Write the selected samples of ``rounds`` ("all", or N: rounds 1..N) of the run in ``run_dir`` to
    ``out`` with their images as files; returns what was written (also ``out/export.json``)."""
    run = RunDir(Path(run_dir))
    if not run.exists():
        raise ExportError(f"{run_dir}: not a tutorloop run directory (no run.json)")
    if form is not None and form not in FORMS:
        raise ExportError(f"unknown form {form!r}; known: {', '.join(FORMS)}")
    chosen = _chosen_rounds(run, parse_rounds(rounds))
    rows = [(n, row) for n in chosen for row in run.read(n, SELECTED)]
    if not rows:
        raise ExportError(f"{run_dir}: no selected samples in round(s) {', '.join(map(str, chosen))}")
    refs = sorted({ref for _, row in rows for ref in row.sample.images}, key=_read_order)
    root = _image_root(run, image_root) if refs else None

    out = Path(out)
    _claim(out)
    report = ExportReport(run_dir=str(Path(run_dir).resolve()), image_root=str(root) if root else None, form=form,
                          rounds=[RoundCount(round=n, samples=sum(1 for m, _ in rows if m == n),
                                             images=sum(len(r.sample.images) for m, r in rows if m == n))
                                  for n in chosen])
    write_json(out / MANIFEST, report)  # unfinished: a re-run after a crash recognises its own folder

    target_of = _write_images(refs, root, out, report, progress) if refs else {}
    write_jsonl(out / SELECTED_FILE, (_record(n, row, target_of, form) for n, row in rows))
    report.removed = _prune(out / IMAGES, set(target_of.values()))
    report.samples, report.images, report.complete = len(rows), len(set(target_of.values())), True
    if report.written:
        os.sync()  # the images reach the disk before the manifest says complete (one flush, not one per file)
    write_json(out / MANIFEST, report)
    return report


# --- which rows, and where their images are ------------------------------------------------------------


def _chosen_rounds(run: RunDir, rounds: str | int) -> list[int]:
    selected = [n for n in run.rounds() if n > 0 and run.has(n, SELECTED)]
    if rounds == "all":
        if not selected:
            raise ExportError(f"{run.root}: no round has selected samples yet (no selected.jsonl in any round)")
        return selected
    missing = [n for n in range(1, rounds + 1) if n not in selected]
    if missing:
        have = f"round(s) {', '.join(map(str, selected))} have" if selected else "no round has"
        raise ExportError(f"{run.root}: --rounds {rounds} asks for round(s) {', '.join(map(str, missing))}, "
                          f"which selected nothing yet; {have} a selected.jsonl")
    return list(range(1, rounds + 1))


def _image_root(run: RunDir, given: Path | None) -> Path:
    recorded = run.read_info().pool_image_root
    root = Path(given) if given is not None else Path(recorded) if recorded else None
    if root is None:
        raise ExportError(f"{run.root / 'run.json'} records no pool image root (a run made before it was "
                          "recorded): pass --image-root, the folder the pool's image paths are relative to")
    if not root.is_dir():
        origin = "--image-root" if given is not None else f"pool_image_root in {run.root / 'run.json'}"
        raise ExportError(f"the pool's image root {root} ({origin}) is not a folder; pass --image-root "
                          "where the pool's images are now")
    return root.resolve()


def _read_order(ref: str) -> tuple:
    """Table references by file and row, so each row group is read once (images.py caches a few)."""
    match = TABLE_REF.match(ref)
    if match is None:
        return (0, ref, 0, "", 0)
    return (1, match["file"], int(match["row"]), match["column"], int(match["index"]))


# --- the folder -----------------------------------------------------------------------------------------


def _claim(out: Path) -> None:
    """``out`` may be new, empty, or an earlier export; anything else is somebody's folder: refused."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"--out {out} is not empty and holds no {MANIFEST} (not an earlier export): "
                          "give a new or empty folder, so nothing of yours is overwritten or removed")
    if (out / MANIFEST).is_file():
        try:
            ExportReport.model_validate(read_json(out / MANIFEST))
        except ValueError as error:
            raise ExportError(f"{out / MANIFEST} is not an export manifest ({error}); give another folder") from None


def _write_images(refs: list[str], root: Path, out: Path, report: ExportReport, progress: bool) -> dict[str, str]:
    """Each image written once under ``out/images``; returns reference -> path relative to ``out``."""
    from tqdm.auto import tqdm

    target_of: dict[str, str] = {}
    source_of: dict[str, str] = {}  # target -> what it holds, to refuse two images under one name
    total = 0
    with tqdm(total=len(refs), desc="export", unit="img", disable=not progress) as bar:
        for ref in refs:
            data, relative, source = _materialise(root, ref)
            # a pool's own images/ folder is not nested in ours: its paths stay as the pool wrote them
            target = relative if relative.split("/", 1)[0] == IMAGES else f"{IMAGES}/{relative}"
            if target in source_of:  # met before: the same bytes in another row, or a clash
                if source_of[target] != source:
                    raise ExportError(f"two images would be written as {out / target}: {source_of[target]} "
                                      f"and {source}; rename the pool file (or export fewer rounds)")
            else:
                source_of[target] = source
                path = out / target
                if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
                    atomic_write_bytes(path, data, durable=False)  # one os.sync() at the end
                    report.written += 1
                total += len(data)
            target_of[ref] = target
            bar.update(1)
    report.bytes = total
    return target_of


def _materialise(root: Path, ref: str) -> tuple[bytes, str, str]:
    """(bytes, name under images/, a description of the source) of one image reference."""
    try:
        data = image_bytes(root, ref)  # refuses a path leaving the root, as every reader does
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise ExportError(f"image {ref!r} under {root}: {error}") from None
    if TABLE_REF.match(ref) is None:
        relative = inside(root, ref).relative_to(root).as_posix()
        return data, relative, f"the pool file {relative}"
    digest = hashlib.sha256(data).hexdigest()
    return data, f"{BY_HASH}/{digest[:32]}.{_extension(data, ref)}", f"table bytes {digest[:32]}"


def _extension(data: bytes, ref: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
    except (UnidentifiedImageError, OSError) as error:
        raise ExportError(f"image {ref!r}: its bytes are not an image PIL can read ({error})") from None
    return _EXTENSIONS.get(kind, kind.lower() or "bin")


def _record(number: int, row: SelectedSample, target_of: dict[str, str], form: str | None) -> dict:
    sample = row.sample
    if sample.image is not None:
        moved: str | list[str] = target_of[sample.image] if isinstance(sample.image, str) \
            else [target_of[ref] for ref in sample.image]
        sample = sample.model_copy(update={"image": moved})
    return {**sample.to_record(form), "selection": {"round": number, **row.why.model_dump()}}


def _prune(images: Path, keep: set[str]) -> int:
    """Remove what an earlier export left in ``images/`` that this one did not write (and emptied folders)."""
    if not images.is_dir():
        return 0
    removed = 0
    base = images.parent
    for folder, _, names in os.walk(images, topdown=False):
        for name in names:
            path = Path(folder) / name
            if path.relative_to(base).as_posix() not in keep:
                path.unlink()
                removed += 1
        if Path(folder) != images and not any(Path(folder).iterdir()):
            Path(folder).rmdir()
    return removed
