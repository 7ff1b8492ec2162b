"""How fast `tutorloop export` materialises a table pool's selected images, against the floor of doing it by hand.

A Parquet pool with its images as bytes (noise PNGs, so they do not compress away) is written, a run
directory selects a random share of its rows over two rounds (through agents/run_dir.py), and
`agents.export.export_run` writes the folder; then again into the same folder (nothing changed: the
idempotent re-run). The baseline, in the same run: pyarrow reads each needed row group once and the bytes
are written with a plain ``open().write`` — no atomic rename, no fsync, no form conversion, no manifest —
the least any export must do. Reported: seconds (median of ``--repeat``), images/s, and the ratio.

    .venv/bin/python benchmarks/export_table_pool.py --rows 10000 --selected 2000
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere


def write_pool(root: Path, rows: int, side: int, row_group: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    path = root / "pool.parquet"
    writer = None
    for start in range(0, rows, row_group):
        batch = []
        for i in range(start, min(rows, start + row_group)):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
            batch.append({"id": f"p-{i:06d}", "image": {"bytes": buffer.getvalue(), "path": None},
                          "conversations": [{"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
                                            {"from": "gpt", "value": "noise"}]})
        table = pa.Table.from_pylist(batch)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group)
    writer.close()
    return path


def write_run(root: Path, pool: Path, selected: int, seed: int = 0) -> Path:
    from tutorloop.agents.records import RunInfo, SelectedSample
    from tutorloop.agents.run_dir import SELECTED, RunDir
    from tutorloop.retrieval.ingest import iter_samples
    from tutorloop.retrieval.rerank import SelectionWhy

    samples = [r.sample for r in iter_samples(pool, check_images=False)]
    chosen = random.Random(seed).sample(samples, selected)
    run = RunDir(root / "run")
    run.write_info(RunInfo(run_id="bench", config={}, pool_image_root=str(pool.parent)))
    half = selected // 2
    for number, part in ((1, chosen[:half]), (2, chosen[half:])):
        run.write(number, SELECTED, [SelectedSample(sample=s, why=SelectionWhy(gap="g", query="q", relevance=0.5,
                                                                               score=0.5, reason="bench"))
                                     for s in part])
    return run.root


def by_hand(run_dir: Path, pool: Path, out: Path) -> int:
    """The floor: each needed row group read once with pyarrow, each image written plainly."""
    import pyarrow.parquet as pq

    from tutorloop.agents.run_dir import SELECTED, RunDir
    from tutorloop.retrieval.images import TABLE_REF

    run = RunDir(run_dir)
    rows = sorted(int(TABLE_REF.match(ref)["row"]) for n in (1, 2) for s in run.read(n, SELECTED) for ref in s.sample.images)
    file = pq.ParquetFile(pool)
    starts, total = [], 0
    for g in range(file.metadata.num_row_groups):
        starts.append(total)
        total += file.metadata.row_group(g).num_rows
    (out / "images").mkdir(parents=True)
    written, group, column = 0, None, None
    for row in rows:
        g = max(i for i, s in enumerate(starts) if s <= row)
        if g != group:
            group, column = g, file.read_row_group(g, columns=["image"]).column("image")
        data = column[row - starts[g]].as_py()["bytes"]
        with open(out / "images" / f"{row}.png", "wb") as handle:
            handle.write(data)
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--selected", type=int, default=2_000)
    parser.add_argument("--side", type=int, default=48, help="image side in pixels (noise PNG)")
    parser.add_argument("--row-group", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_table_pool.json")
    args = parser.parse_args()

    from tutorloop.agents.export import export_run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pool").mkdir()
        pool = write_pool(root / "pool", args.rows, args.side, args.row_group)
        pool_mb = round(pool.stat().st_size / 1e6, 1)
        run = write_run(root, pool, args.selected)
        first, rerun, floor, report = [], [], [], None
        for i in range(args.repeat):
            out = root / f"export-{i}"
            start = time.perf_counter()
            report = export_run(run, out)
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = export_run(run, out)
            rerun.append(time.perf_counter() - start)
            assert again.written == 0 and again.images == report.images
            hand = root / f"hand-{i}"
            start = time.perf_counter()
            n = by_hand(run, pool, hand)
            floor.append(time.perf_counter() - start)
            assert n == report.images
            shutil.rmtree(out)
            shutil.rmtree(hand)
    result = {
        "pool_rows": args.rows, "row_group": args.row_group, "pool_mb": pool_mb, "selected": args.selected,
        "images": report.images,
        "image_mb": round(report.bytes / 1e6, 2), "repeat": args.repeat,
        "export_s": round(statistics.median(first), 3), "rerun_s": round(statistics.median(rerun), 3),
        "by_hand_s": round(statistics.median(floor), 3),
        "export_images_per_s": round(report.images / statistics.median(first)),
        "by_hand_over_export": round(statistics.median(floor) / statistics.median(first), 3),
        "rerun_over_export": round(statistics.median(rerun) / statistics.median(first), 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
