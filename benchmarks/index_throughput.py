"""Index throughput: the full `tutorloop index` pipeline against raw SentenceTransformer.encode.

Measured in one run on a synthetic pool (varied instruction texts, one small PNG per sample):
  * raw ``encode`` samples/s of the same texts, same batch size and normalisation, interleaved with
    the pipeline runs (raw, pipeline, raw, ..., raw; medians, which bracket a shared machine's drift);
  * the pipeline (read + validate + image checks + embed + cluster + upsert, Qdrant local mode)
    samples/s, and the ratio pipeline / raw (target >= 0.8);
  * peak resident memory of the pipeline at two pool sizes (10k vs 40k by default), each in its own
    subprocess (ru_maxrss, and VmHWM reset just before the run so model loading does not hide it), next
    to the memory local-mode Qdrant needs just to hold the finished collection;
  * top-50 query latency on the index: no exclusion, and 100 excluded ids with both strategies
    (over-fetch + drop in Python, vs a ``must_not HasId`` filter).

Writes benchmarks/results/index_throughput.json and .md.

    .venv/bin/python benchmarks/index_throughput.py                # 20k pool, memory at 10k and 40k
    .venv/bin/python benchmarks/index_throughput.py --n 2000 --memory-sizes 1000 2000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"

SUBJECTS = ["circle", "square", "triangle", "star", "car", "dog", "tree", "house", "boat", "chart", "sign",
            "clock", "person", "bicycle", "cup", "table", "window", "flower", "bird", "road"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the centre", "near the edge"]
TEMPLATES = [
    ("counting", "How many {c} {s}s are there in the image?"),
    ("colour", "What colour is the {s} {p}?"),
    ("position", "Is the {s} {p} of the picture or somewhere else?"),
    ("relation", "Is the {c} {s} closer to the {s2} than to the {c2} {s3}?"),
    ("reading", "Read the text written on the {s} and answer in one word."),
    ("caption", "Describe the {c} {s} {p} in one sentence, mentioning its shape and colour."),
    ("reasoning", "The {s} is {c}. If it were painted {c2}, would it match the {s2} {p}? Explain briefly."),
    ("chart", "Looking at the chart, which bar next to the {s} is the tallest, and by how much does it "
              "exceed the {c} one {p}?"),
    ("yesno", "Is there a {c} {s} in this image?"),
    ("compare", "Which is bigger, the {s} or the {s2}? Answer with the name of the object."),
]


def make_pool(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` LLaVA records with varied instructions; each has its own image path (hard links to a
    handful of small PNGs, so every path is checked like a distinct image)."""
    from PIL import Image

    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    bases = []
    for k in range(16):
        base = folder / f"base-{k}.png"
        Image.new("RGB", (32, 32), (16 * k, 255 - 16 * k, (37 * k) % 256)).save(base)
        bases.append(base)
    pool = folder / "pool.jsonl"
    with pool.open("w", encoding="utf-8") as out:
        for i in range(n):
            source, template = TEMPLATES[rng.randrange(len(TEMPLATES))]
            text = template.format(s=rng.choice(SUBJECTS), s2=rng.choice(SUBJECTS), s3=rng.choice(SUBJECTS),
                                   c=rng.choice(COLOURS), c2=rng.choice(COLOURS), p=rng.choice(PLACES))
            image = images / f"{i // 1000:03d}" / f"{i:06d}.png"
            image.parent.mkdir(exist_ok=True)
            if not image.exists():
                os.link(bases[i % len(bases)], image)
            record = {"id": f"bench-{i:06d}", "image": str(image.relative_to(folder)), "source": source,
                      "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                        {"from": "gpt", "value": rng.choice(COLOURS + ["3", "yes", "no"])}]}
            out.write(json.dumps(record) + "\n")
    return pool


def pool_texts(pool: Path) -> list[str]:
    from tutorloop.retrieval.embed import sample_text
    from tutorloop.retrieval.ingest import Accepted, iter_samples

    return [sample_text(r.sample) for r in iter_samples(pool, check_images=False) if isinstance(r, Accepted)]


def raw_encode_rate(model, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - start)


def run_pipeline(pool: Path, store: Path, model, args) -> dict:
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
    from tutorloop.retrieval.index import PoolIndex, index_pool

    shutil.rmtree(store, ignore_errors=True)
    index = PoolIndex.open(store=store)
    try:
        report = index_pool(pool, index=index, embedder=model, embedder_name=DEFAULT_EMBEDDER,
                            clusters=args.clusters, batch_size=args.batch_size,
                            encode_batch_size=args.encode_batch_size, quarantine_path=store / "q.jsonl",
                            progress=False)
    finally:
        index.close()
    return {"samples_per_s": report.samples_per_second, "seconds": report.seconds, "k": report.k,
            "silhouette": report.silhouette, "points": report.points, "counts": report.counts}


def query_latency(store: Path, model, texts: list[str], n_queries: int, seed: int) -> dict:
    from tutorloop.retrieval.embed import embed_texts
    from tutorloop.retrieval.index import PoolIndex

    rng = random.Random(seed)
    queries = embed_texts(model, rng.sample(texts, n_queries))
    index = PoolIndex.open(store=store)
    ids = index.all_ids()
    exclude = frozenset(rng.sample(ids, 100))
    out = {}
    try:
        index.query(queries[0], 50)  # warm-up
        for name, excluded, overfetch_max in (("top50", frozenset(), 5000),
                                              ("top50_exclude100_overfetch", exclude, 5000),
                                              ("top50_exclude100_filter", exclude, -1)):
            index.LOCAL_OVERFETCH_MAX = overfetch_max
            times = []
            for vector in queries:
                start = time.perf_counter()
                hits = index.query(vector, 50, exclude_ids=excluded)
                times.append(time.perf_counter() - start)
                assert len(hits) == 50 and not excluded & {h.sample_id for h in hits}
            times.sort()
            out[name] = {"median_ms": 1000 * statistics.median(times),
                         "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))], "n": len(times)}
    finally:
        index.close()
    return out


def _status_mb(key: str) -> float:
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Linux resets VmHWM when 5 is written to clear_refs; then the peak covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_memory(pool: Path, store: Path, args) -> dict:
    """Runs in its own process: resident memory of one pipeline run. ru_maxrss is the process's lifetime
    peak (model loading included); VmHWM after a reset is the peak during the run alone."""
    from tutorloop.retrieval.embed import load_embedder

    model = load_embedder()
    model.encode(["warm up"] * 64, batch_size=64)
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak()
    result = run_pipeline(pool, store, model, args)
    return {"rss_before_mb": rss_before, "peak_rss_run_mb": _status_mb("VmHWM") if reset else float("nan"),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "samples_per_s": result["samples_per_s"]}


def child_store_memory(store: Path) -> dict:
    """Runs in its own process: the resident memory local-mode Qdrant needs to hold the finished collection."""
    from tutorloop.retrieval.index import PoolIndex

    before = _status_mb("VmRSS")
    index = PoolIndex.open(store=store)
    count = index.count()
    held = _status_mb("VmRSS") - before
    index.close()
    return {"open_rss_mb": held, "points": count}


def in_subprocess(flag: str, *values: str, args) -> dict:
    command = [sys.executable, __file__, flag, *values, "--clusters", str(args.clusters),
               "--batch-size", str(args.batch_size), "--encode-batch-size", str(args.encode_batch_size)]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def markdown(result: dict) -> str:
    t, m, q = result["throughput"], result["memory"], result["query"]
    rows = [
        "# Index throughput (`benchmarks/index_throughput.py`)",
        "",
        f"Pool: {result['n']} synthetic samples; {result['machine']}; Qdrant local mode; "
        f"embedder {result['embedder']}; batch {result['batch_size']}, encode batch {result['encode_batch_size']}, "
        f"torch threads {result['torch_threads']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| raw `encode` samples/s: median (runs) | {t['raw']:.1f} ({', '.join(f'{r:.1f}' for r in t['raw_runs'])}) |",
        f"| pipeline samples/s (read+validate+embed+cluster+upsert): median (runs) | {t['pipeline']:.1f} "
        f"({', '.join(f'{r:.1f}' for r in t['pipeline_runs'])}) |",
        f"| **ratio of medians pipeline / raw** (target ≥ 0.8) | **{t['ratio']:.2f}** |",
        f"| clusters (auto k, silhouette) | {t['k']} ({t['silhouette']:.3f}) |",
        f"| pipeline stage seconds | {', '.join(f'{k} {v:.1f}' for k, v in t['seconds'].items())} |",
    ]
    for size, row in m.items():
        rows.append(f"| memory at {size} samples: RSS before run / peak during run / ru_maxrss / "
                    f"local-mode store alone | {row['rss_before_mb']:.0f} / {row['peak_rss_run_mb']:.0f} / "
                    f"{row['ru_maxrss_mb']:.0f} / {row['store_open_rss_mb']:.0f} MB |")
    sizes = list(m)
    if len(sizes) == 2:
        a, b = m[sizes[0]], m[sizes[1]]
        added = int(sizes[1]) - int(sizes[0])
        growth = b["peak_rss_run_mb"] - a["peak_rss_run_mb"]
        rows.append(f"| peak-during-run growth {sizes[0]}→{sizes[1]} (local mode keeps every point in RAM) | "
                    f"{growth:+.0f} MB = {1024 * growth / added:.1f} KB per added point |")
    for name, row in q.items():
        rows.append(f"| query {name} median / p95 | {row['median_ms']:.1f} / {row['p95_ms']:.1f} ms |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="pool size of the throughput and query run")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[10_000, 40_000],
                        help="pool sizes whose peak RSS is measured, each in its own subprocess (none: skip)")
    parser.add_argument("--clusters", default="auto", help="k or auto (as `tutorloop index --clusters`)")
    parser.add_argument("--batch-size", type=int, default=1024, help="pipeline batch (records per embed+upsert)")
    parser.add_argument("--torch-threads", type=int,
                        help="torch intra-op threads for raw and pipeline alike (default: torch's own choice)")
    parser.add_argument("--encode-batch-size", type=int, default=64, help="encode batch, same for raw and pipeline")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pipeline runs, interleaved with repeats+1 raw encode runs; medians (default: 2)")
    parser.add_argument("--queries", type=int, default=50, help="queries timed per latency measure")
    parser.add_argument("--workdir", type=Path, help="where pools and stores go (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS / "index_throughput.json", help="JSON result file")
    parser.add_argument("--child-memory", nargs=2, metavar=("POOL", "STORE"), help=argparse.SUPPRESS)
    parser.add_argument("--child-store", metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, metavar="JSON", help="only re-write the markdown table of a result file")
    args = parser.parse_args(argv)
    if args.clusters != "auto":
        args.clusters = int(args.clusters)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.child_memory:
        print(json.dumps(child_memory(Path(args.child_memory[0]), Path(args.child_memory[1]), args)))
        return 0
    if args.child_store:
        print(json.dumps(child_store_memory(Path(args.child_store))))
        return 0
    if args.render:
        result = json.loads(args.render.read_text())
        result.pop("pipeline_growth_mb", None)
        args.render.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return 0

    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, load_embedder

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tutorloop-bench-"))
    try:
        result = measure(args, work, load_embedder(), DEFAULT_EMBEDDER)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def measure(args, work: Path, model, embedder_name: str) -> dict:
    pool = make_pool(work / f"pool-{args.n}", args.n)
    texts = pool_texts(pool)
    model.encode(texts[:128], batch_size=args.encode_batch_size)  # warm-up: first calls pay for allocation
    store = work / f"store-{args.n}"
    # Interleaved raw, pipeline, raw, pipeline, ..., raw: the medians bracket the load of a shared machine.
    raw_rates, pipelines = [], []
    for repeat in range(args.repeats):
        print(f"[{repeat + 1}/{args.repeats}] raw encode of {len(texts)} texts ...", file=sys.stderr)
        raw_rates.append(raw_encode_rate(model, texts, args.encode_batch_size))
        print(f"[{repeat + 1}/{args.repeats}] pipeline on {args.n} records ...", file=sys.stderr)
        pipelines.append(run_pipeline(pool, store, model, args))
    raw_rates.append(raw_encode_rate(model, texts, args.encode_batch_size))
    raw = statistics.median(raw_rates)
    pipeline_rate = statistics.median(p["samples_per_s"] for p in pipelines)
    pipeline = min(pipelines, key=lambda p: abs(p["samples_per_s"] - pipeline_rate))
    print("query latency ...", file=sys.stderr)
    query = query_latency(store, model, texts, args.queries, seed=1)

    memory = {}
    for size in args.memory_sizes:
        print(f"peak memory at {size} ...", file=sys.stderr)
        size_pool = make_pool(work / f"pool-{size}", size)
        size_store = work / f"mem-store-{size}"
        row = in_subprocess("--child-memory", str(size_pool), str(size_store), args=args)
        row["store_open_rss_mb"] = in_subprocess("--child-store", str(size_store), args=args)["open_rss_mb"]
        memory[str(size)] = row
    return {
        "n": args.n, "embedder": embedder_name, "batch_size": args.batch_size,
        "encode_batch_size": args.encode_batch_size, "machine": f"{os.cpu_count()} CPU cores (shared)",
        "torch_threads": _torch_threads(),
        "throughput": {"raw_runs": raw_rates, "raw": raw, "pipeline_runs": [p["samples_per_s"] for p in pipelines],
                       "pipeline": pipeline_rate, "ratio": pipeline_rate / raw,
                       "seconds": pipeline["seconds"], "k": pipeline["k"], "silhouette": pipeline["silhouette"] or 0.0,
                       "counts": pipeline["counts"]},
        "memory": memory, "query": query,
    }


if __name__ == "__main__":
    sys.exit(main())
