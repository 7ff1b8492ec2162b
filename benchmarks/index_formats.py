"""`tutorloop index` end to end on real-format pools, against raw encoding of the same texts, and on Ray.

One synthetic pool (varied instructions, one small PNG each; benchmarks/index_throughput.py's generator)
written three ways — a JSON array (LLaVA-665K's layout), Parquet with the image bytes inside (LLaVA-
OneVision's / The Cauldron's), and JSONL for the Ray path — then, in one run, interleaved:

- raw ``SentenceTransformer.encode`` of the pool's texts (same batch size and normalisation): the baseline;
- the single-process pipeline (read + validate + image checks + embed + cluster + upsert into the
  embedded store) on the JSON array and on the Parquet file: samples/s and the ratio to raw;
- the Ray Data pipeline on a local Ray of ``--ray-cpus`` CPUs against the single-process JSONL pipeline.

    .venv/bin/python benchmarks/index_formats.py --n 20000
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


def write_forms(work: Path, n: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.index_throughput import make_pool

    jsonl = make_pool(work, n)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    array = work / "pool.json"
    array.write_text(json.dumps(rows, indent=1))
    images = {r["image"]: (work / r["image"]).read_bytes() for r in rows}
    table = [{**r, "image": {"bytes": images[r["image"]], "path": None}} for r in rows]
    parquet = work / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(table), parquet, row_group_size=2048)
    return {"jsonl": jsonl, "json_array": array, "parquet": parquet}


def pipeline(pool: Path, store: Path, model, *, ray: bool = False) -> float:
    from retrieval.embed import DEFAULT_EMBEDDER
    from retrieval.index import PoolIndex, index_pool

    shutil.rmtree(store, ignore_errors=True)
    index = PoolIndex.open(store=store)
    start = time.perf_counter()
    try:
        if ray:
            from retrieval.ray_index import index_pool_ray

            report = index_pool_ray(pool, index=index, embedder_name=DEFAULT_EMBEDDER, clusters=16,
                                    quarantine_path=store.with_suffix(".q.jsonl"))
        else:
            report = index_pool(pool, index=index, embedder=model, embedder_name=DEFAULT_EMBEDDER, clusters=16,
                                quarantine_path=store.with_suffix(".q.jsonl"), progress=False)
    finally:
        index.close()
    assert report.counts["rejected"] == 0, report.counts
    return report.counts["accepted"] / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tutorloop-index-formats")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "index_formats.json")
    args = parser.parse_args(argv)
    import ray
    import torch

    from benchmarks.index_throughput import pool_texts
    from retrieval.embed import load_embedder

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    pools = write_forms(args.work, args.n)
    model = load_embedder()
    texts = pool_texts(pools["jsonl"])
    raw = []

    def raw_rate() -> float:
        start = time.perf_counter()
        model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        raw.append(len(texts) / (time.perf_counter() - start))
        return raw[-1]

    rates: dict[str, float] = {}
    raw_rate()
    for form in ("json_array", "parquet", "jsonl"):
        rates[form] = pipeline(pools[form], args.work / f"store-{form}", model)
        raw_rate()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        rates["ray_jsonl"] = pipeline(pools["jsonl"], args.work / "store-ray", model, ray=True)
    finally:
        ray.shutdown()
    raw_median = statistics.median(raw)
    result = {
        "command": "benchmarks/index_formats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": args.n, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "raw_encode_samples_per_s": [round(r, 1) for r in raw], "raw_median": round(raw_median, 1),
        "pipeline_samples_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_raw": {k: round(v / raw_median, 3) for k, v in rates.items() if k != "ray_jsonl"},
        "ray_over_single_jsonl": round(rates["ray_jsonl"] / rates["jsonl"], 3),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
