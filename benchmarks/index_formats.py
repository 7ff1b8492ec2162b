"""`tutorloop index` end to end on real-format pools, against raw encoding of the same texts, and on Ray.

One synthetic pool (varied instructions, one small PNG each; benchmarks/index_throughput.py's generator)
written three ways — a JSON array (LLaVA-665K's layout), Parquet with the image bytes inside (LLaVA-
OneVision's / The Cauldron's), and JSONL for the Ray path — then, in one run, interleaved:

- raw ``SentenceTransformer.encode`` of the pool's texts (same batch size and normalisation): the baseline;
- the single-process pipeline (read + validate + image checks + embed + cluster + upsert into the
  embedded store) on the JSON array and on the Parquet file: samples/s and the ratio to raw;
- the Ray Data pipeline on a local Ray of ``--ray-cpus`` CPUs against the single-process JSONL pipeline.

    .venv/bin/python benchmarks/index_formats.py --n 20000
    .venv/bin/python benchmarks/index_formats.py --n 100000 --forms json_array,parquet --raw-sample 20000 \
        --results benchmarks/results/index_formats_100k.json

``--raw-sample K`` times the raw baseline on a seeded uniform sample of K of the pool's texts (the same
length distribution, so the same samples/s) instead of all of them: at 100k on a shared 2-core machine the
full protocol (four raw passes and four pipelines) takes hours. Each pipeline run's stage seconds are kept
in the result; the load average before and after is recorded, since the machine is often shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


ROW_GROUP = 2048


def write_forms(work: Path, n: int) -> dict[str, Path]:
    """The JSONL pool, then the same records as a JSON array and as Parquet with the image bytes inside,
    written one row group at a time (a pool of any size is never held in memory)."""
    from benchmarks.index_throughput import make_pool

    jsonl = make_pool(work, n)
    array, parquet = work / "pool.json", work / "pool.parquet"
    writer = None
    with jsonl.open(encoding="utf-8") as lines, array.open("w", encoding="utf-8") as out:
        out.write("[\n")
        group: list[dict] = []
        for i, line in enumerate(lines):
            row = json.loads(line)
            out.write((",\n" if i else "") + json.dumps(row, indent=1))
            group.append({**row, "image": {"bytes": (work / row["image"]).read_bytes(), "path": None}})
            if len(group) == ROW_GROUP:
                writer = _write_group(writer, parquet, group)
                group = []
        if group:
            writer = _write_group(writer, parquet, group)
        out.write("\n]\n")
    if writer is not None:
        writer.close()
    return {"jsonl": jsonl, "json_array": array, "parquet": parquet}


def _write_group(writer, path: Path, rows: list[dict]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table, row_group_size=ROW_GROUP)
    return writer


def pipeline(pool: Path, store: Path, model, *, ray: bool = False) -> tuple[float, dict]:
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
    from tutorloop.retrieval.index import PoolIndex, index_pool

    shutil.rmtree(store, ignore_errors=True)
    index = PoolIndex.open(store=store)
    start = time.perf_counter()
    try:
        if ray:
            from tutorloop.retrieval.ray_index import index_pool_ray

            report = index_pool_ray(pool, index=index, embedder_name=DEFAULT_EMBEDDER, clusters=16,
                                    quarantine_path=store.with_suffix(".q.jsonl"))
        else:
            report = index_pool(pool, index=index, embedder=model, embedder_name=DEFAULT_EMBEDDER, clusters=16,
                                quarantine_path=store.with_suffix(".q.jsonl"), progress=False)
    finally:
        index.close()
    assert report.counts["rejected"] == 0, report.counts
    return report.counts["accepted"] / (time.perf_counter() - start), report.seconds


FORMS = ("json_array", "parquet", "jsonl", "ray_jsonl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tutorloop-index-formats")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "index_formats.json")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help=f"comma-separated, from {','.join(FORMS)} (ray_jsonl is compared with jsonl)")
    parser.add_argument("--raw-sample", type=int, default=0,
                        help="time the raw baseline on a seeded sample of this many texts (0: all)")
    args = parser.parse_args(argv)
    forms = [f for f in args.forms.split(",") if f]
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        parser.error(f"--forms: unknown {unknown}; choose from {list(FORMS)}")
    import random

    import torch

    from benchmarks.index_throughput import pool_texts
    from tutorloop.retrieval.embed import load_embedder

    load_before = os.getloadavg()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    pools = write_forms(args.work, args.n)
    model = load_embedder()
    texts = pool_texts(pools["jsonl"])
    if 0 < args.raw_sample < len(texts):
        texts = random.Random(0).sample(texts, args.raw_sample)
    raw = []

    def raw_rate() -> float:
        start = time.perf_counter()
        model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        raw.append(len(texts) / (time.perf_counter() - start))
        return raw[-1]

    rates: dict[str, float] = {}
    seconds: dict[str, dict] = {}

    def write(done: bool) -> dict:
        """The result so far; written after every step, so a run stopped early keeps what it measured."""
        raw_median = statistics.median(raw)
        result = {
            "command": "benchmarks/index_formats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "complete": done, "n": args.n, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "raw_texts": len(texts),
            "load_average_1m_before_now": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "raw_encode_samples_per_s": [round(r, 1) for r in raw], "raw_median": round(raw_median, 1),
            "pipeline_samples_per_s": {k: round(v, 1) for k, v in rates.items()},
            "ratio_to_raw": {k: round(v / raw_median, 3) for k, v in rates.items() if k != "ray_jsonl"},
            "stage_seconds": seconds,
        }
        if "ray_jsonl" in rates and "jsonl" in rates:
            result["ray_over_single_jsonl"] = round(rates["ray_jsonl"] / rates["jsonl"], 3)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=2) + "\n")
        return result

    raw_rate()
    for form in (f for f in FORMS if f in forms and f != "ray_jsonl"):
        rates[form], seconds[form] = pipeline(pools[form], args.work / f"store-{form}", model)
        raw_rate()
        write(done=False)
    if "ray_jsonl" in forms:
        import ray

        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        try:
            rates["ray_jsonl"], seconds["ray_jsonl"] = pipeline(pools["jsonl"], args.work / "store-ray", model,
                                                                ray=True)
        finally:
            ray.shutdown()
    print(json.dumps(write(done=True), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
