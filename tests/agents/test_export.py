"""`tutorloop export`: a run's selection as a folder an outside trainer reads — images as files, paths
relative to it. Run directories are written through RunDir from samples read out of real small pools (a
Parquet file with image bytes, a JSONL pool with image files); no model is needed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tutorloop.agents.cli import main
from tutorloop.agents.export import ExportError, export_run
from tutorloop.agents.records import RunInfo, SelectedSample
from tutorloop.agents.run_dir import SELECTED, RunDir
from tutorloop.retrieval.formats import detect
from tutorloop.retrieval.images import image_bytes, open_image
from tutorloop.retrieval.ingest import Accepted, iter_samples, load_samples
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import SelectionWhy


def _png(colour: str, size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _turns(question: str, answer: str, tags: int = 1) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" * tags + question}, {"from": "gpt", "value": answer}]


def parquet_pool(root: Path) -> list[Sample]:
    """A Parquet pool with its images as bytes (row groups of 2): one image, two images (HF Image structs),
    a JPEG, the same bytes as row 0 again, a text-only row. Returns its samples, read as `index` reads them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": "t-red", "images": [{"bytes": _png("red"), "path": None}], "conversations": _turns("Colour?", "red")},
        {"id": "t-two", "images": [{"bytes": _png("blue"), "path": None}, {"bytes": _png("green", (3, 9)), "path": None}],
         "conversations": _turns("Same colour?", "no", tags=2)},
        {"id": "t-jpeg", "images": [{"bytes": _jpeg("yellow"), "path": None}], "conversations": _turns("Colour?", "yellow")},
        {"id": "t-red-again", "images": [{"bytes": _png("red"), "path": None}], "conversations": _turns("Hue?", "red")},
        {"id": "t-text", "images": [], "conversations": [{"from": "human", "value": "Two plus two?"},
                                                        {"from": "gpt", "value": "4"}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "pool.parquet", row_group_size=2)
    results = list(iter_samples(root / "pool.parquet"))
    assert all(isinstance(r, Accepted) for r in results)
    return [r.sample for r in results]


def file_pool(root: Path) -> list[Sample]:
    """A LLaVA JSONL pool with image files in two folders (the same file name in both: nothing may collide)."""
    for folder, colour in (("images", "red"), ("more/images", "blue")):
        (root / folder).mkdir(parents=True)
        Image.new("RGB", (5, 5), colour).save(root / folder / "a.png")
    rows = [{"id": "f-one", "image": "images/a.png", "conversations": _turns("Colour?", "red")},
            {"id": "f-two", "image": ["images/a.png", "more/images/a.png"], "conversations": _turns("Same?", "no", 2)},
            {"id": "f-text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "hello"}]}]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [r.sample for r in iter_samples(root / "pool.jsonl")]


def make_run(path: Path, pool_root: Path | None, rounds: list[list[Sample]]) -> Path:
    run = RunDir(path)
    run.write_info(RunInfo(run_id="export-test", config={}, pool_image_root=str(pool_root) if pool_root else None))
    for number, samples in enumerate(rounds, start=1):
        run.write(number, SELECTED, [
            SelectedSample(sample=s, why=SelectionWhy(gap=f"gap-{number}", query="colours", relevance=0.5,
                                                      score=0.7, reason=f"picked in round {number}"))
            for s in samples])
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_parquet_pool_exports_its_image_bytes_as_files(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    samples = parquet_pool(pool)
    assert samples[0].images == ["parquet:pool.parquet:0:images:0"]  # what selected.jsonl holds without export
    run = make_run(tmp_path / "run", pool, [samples[:2], samples[2:]])
    out = tmp_path / "export"

    report = export_run(run, out)

    rows = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert [r["selection"]["round"] for r in rows] == [1, 1, 2, 2, 2]
    assert rows[0]["selection"]["reason"] == "picked in round 1" and rows[3]["selection"]["gap"] == "gap-2"
    # every exported image is the table's bytes, unchanged, and decodes to the same pixels
    for row, sample in zip(rows, samples, strict=True):
        exported = row.get("images", [row["image"]] if "image" in row else [])
        assert len(exported) == len(sample.images)
        for path, ref in zip(exported, sample.images, strict=True):
            assert path.startswith("images/by-hash/") and not Path(path).is_absolute()
            assert (out / path).read_bytes() == image_bytes(pool, ref)
            with Image.open(out / path) as mine, open_image(pool, ref) as theirs:
                assert mine.convert("RGB").tobytes() == theirs.convert("RGB").tobytes()
    assert rows[2]["images"][0].endswith(".jpg") and rows[0]["images"][0].endswith(".png")
    assert rows[0]["images"] == rows[3]["images"], "the same bytes in two rows are one file"
    # counts reconcile: samples per round, image files on disk, their bytes
    files = _files(out / "images")
    assert report.samples == len(rows) == sum(c.samples for c in report.rounds) == 5
    assert [(c.round, c.samples, c.images) for c in report.rounds] == [(1, 2, 3), (2, 3, 2)]
    assert report.images == len(files) == report.written == 4  # red (twice), blue, green, yellow
    assert report.bytes == sum(len(b) for b in files.values())
    assert json.loads((out / "export.json").read_text())["complete"] is True
    # the folder validates back through the loader, with itself as the image root (images checked)
    back = load_samples(out / "selected.jsonl", out)
    assert [s.id for s in back] == [s.id for s in samples]
    assert [len(s.images) for s in back] == [1, 2, 1, 1, 0]


@pytest.mark.parametrize("form", ["llava", "sharegpt", "messages"])
def test_every_form_exports_and_reads_back(tmp_path, form):
    pool = tmp_path / "pool"
    pool.mkdir()
    samples = parquet_pool(pool)
    out = tmp_path / "export"
    export_run(make_run(tmp_path / "run", pool, [samples]), out, form=form)
    rows = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    imaged = [r for r, s in zip(rows, samples, strict=True) if s.images]
    assert all(detect(r) == form for r in imaged)
    if form == "messages":
        assert rows[1]["images"] == [p for p in rows[1]["images"] if p.startswith("images/")]
        assert [p["type"] for p in rows[1]["messages"][0]["content"]] == ["image", "image", "text"]
    back = load_samples(out / "selected.jsonl", out)
    assert [(s.id, s.reference, len(s.images)) for s in back] == [(s.id, s.reference, len(s.images)) for s in samples]


def test_a_file_pool_exports_under_its_own_relative_paths(tmp_path):
    pool = tmp_path / "pool"
    samples = file_pool(pool)
    out = tmp_path / "export"
    report = export_run(make_run(tmp_path / "run", pool, [samples]), out)
    rows = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert rows[0]["image"] == "images/a.png"  # a single image stays a string; the pool's images/ is not doubled
    assert rows[1]["image"] == ["images/a.png", "images/more/images/a.png"]
    assert "image" not in rows[2]
    assert _files(out / "images") == {"a.png": (pool / "images/a.png").read_bytes(),
                                      "more/images/a.png": (pool / "more/images/a.png").read_bytes()}
    assert report.images == 2 and report.samples == 3
    assert [s.id for s in load_samples(out / "selected.jsonl", out)] == ["f-one", "f-two", "f-text"]


def test_re_running_overwrites_cleanly(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    samples = parquet_pool(pool)
    run = make_run(tmp_path / "run", pool, [samples[:2], samples[2:]])
    out = tmp_path / "export"
    export_run(run, out)
    first = _files(out)

    again = export_run(run, out)  # the same export: nothing rewritten, the same files
    assert again.written == 0 and again.removed == 0 and again.images == 4
    assert {k: v for k, v in _files(out).items() if k != "export.json"} == \
        {k: v for k, v in first.items() if k != "export.json"}

    fewer = export_run(run, out, rounds=1)  # round 1 only: round 2's images go, nothing else is left behind
    rows = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t-red", "t-two"]
    assert fewer.removed == 1 and fewer.images == 3  # the JPEG was round 2's alone
    assert set(_files(out / "images")) == {p[len("images/"):] for r in rows for p in r["images"]}
    assert not [p for p in (out / "images").rglob("*") if p.name.endswith(".tmp")]


def test_clear_errors(tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    samples = parquet_pool(pool)
    with pytest.raises(ExportError, match="not a tutorloop run directory"):
        export_run(tmp_path / "nowhere", tmp_path / "out")
    empty = make_run(tmp_path / "empty", pool, [])
    with pytest.raises(ExportError, match="no round has selected samples"):
        export_run(empty, tmp_path / "out")
    run = make_run(tmp_path / "run", pool, [samples[:2]])
    with pytest.raises(ExportError, match="asks for round"):
        export_run(run, tmp_path / "out", rounds=3)
    with pytest.raises(ExportError, match="'all' or a number"):
        export_run(run, tmp_path / "out", rounds="some")
    make_run(tmp_path / "nothing", pool, [[]])
    with pytest.raises(ExportError, match="no selected samples in round"):
        export_run(tmp_path / "nothing", tmp_path / "out")
    theirs = tmp_path / "theirs"
    (theirs / "images").mkdir(parents=True)
    (theirs / "images" / "mine.png").write_bytes(_png("red"))
    with pytest.raises(ExportError, match="not empty"):
        export_run(run, theirs)
    assert (theirs / "images" / "mine.png").exists(), "somebody's folder is never pruned"
    with pytest.raises(ExportError, match="not a folder"):
        export_run(run, tmp_path / "out", image_root=tmp_path / "moved")
    no_root = make_run(tmp_path / "old", None, [samples[:1]])
    with pytest.raises(ExportError, match="records no pool image root"):
        export_run(no_root, tmp_path / "out")
    assert export_run(no_root, tmp_path / "out", image_root=pool).images == 1
    # the CLI says it in one line and exits 2
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "not a tutorloop run directory" in capsys.readouterr().out


def test_cli_export_prints_the_summary(tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    samples = parquet_pool(pool)
    run = make_run(tmp_path / "run", pool, [samples[:2], samples[2:]])
    out = tmp_path / "for-trl"
    assert main(["export", str(run), "--out", str(out), "--form", "messages", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "exported to" in text and "messages" in text
    total = next(line for line in text.splitlines() if "all" in line and "│" in line)
    assert [cell.strip() for cell in total.split("│") if cell.strip()][:5] == ["all", "5", "5", "4", "4"]
    assert len(load_samples(out / "selected.jsonl", out)) == 5


def test_a_datasets_folder_exports_and_a_missing_image_is_named(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is in the dev extra")

    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}]})
    rows = [{"id": f"d-{i}", "image": {"bytes": _png(colour), "path": None}, "conversations": _turns("Colour?", colour)}
            for i, colour in enumerate(["red", "blue"])]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    samples = [r.sample for r in iter_samples(tmp_path / "saved")]
    assert samples[0].image.startswith("arrow:")
    out = tmp_path / "export"
    export_run(make_run(tmp_path / "run", tmp_path / "saved", [samples]), out)
    back = load_samples(out / "selected.jsonl", out)
    for sample, original in zip(back, samples, strict=True):
        assert (out / sample.image).read_bytes() == image_bytes(tmp_path / "saved", original.image)

    pool = tmp_path / "files"
    selected = file_pool(pool)
    (pool / "more/images/a.png").unlink()  # moved away after the run
    with pytest.raises(ExportError, match="more/images/a.png"):
        export_run(make_run(tmp_path / "run2", pool, [selected]), tmp_path / "export2")
