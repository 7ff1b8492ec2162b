"""SemDeDup at index time (retrieval/semdedup.py): its cost as a ratio to the index build of the same run,
and what it marks on the demo pool, whose planted near-duplicates are known (``duplicate_of``).

1. The demo pool (6,000 samples with images): `index_pool` with de-duplication off (the baseline: read,
   validate, embed, cluster, upsert, HNSW), then `dedup_store` on that index at each threshold: seconds,
   samples marked, and against the planted duplicates — found (a planted pair marked one of the other, or
   both in one group) and what else was marked (identical text-only questions; same question, same
   answer, near-identical scene by thumbnail).
2. 100,000 text vectors (the demo pool's MiniLM vectors + seeded noise, as benchmarks/store_scale.py
   makes them; text-only records, so no image is read): the store build (cluster fit on a 4,096 sample,
   assignment, qdrant-edge upsert, HNSW) against `dedup_store` at 0.95. Embedding 100k texts is not
   redone here: the full build's time is also given with the embedding at the rate measured in part 1
   (labelled an estimate).

    .venv/bin/python benchmarks/semdedup.py --out /tmp/semdedup --results benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THRESHOLDS = (0.90, 0.93, 0.95, 0.97)


def planted_quality(dup_of: dict[str, str], planted: dict[str, str]) -> dict:
    def same_pair(a: str, b: str) -> bool:
        return planted.get(a) == b or planted.get(b) == a or (a in planted and planted.get(a) == planted.get(b))

    found = sum(1 for d, o in planted.items()
                if dup_of.get(d) == o or dup_of.get(o) == d or (d in dup_of and dup_of[d] == dup_of.get(o)))
    true_marks = sum(same_pair(a, b) for a, b in dup_of.items())
    return {"planted": len(planted), "planted_found": found, "marks_on_planted_pairs": true_marks,
            "other_marks": len(dup_of) - true_marks}


def demo_pool(out: Path) -> dict:
    from tutorloop.demo.build import build_world
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, load_embedder
    from tutorloop.retrieval.index import PoolIndex, index_pool
    from tutorloop.retrieval.semdedup import dedup_store

    world = build_world(out / "world", with_student=False, progress=False)
    planted = {}
    samples = {}
    for line in world.pool.read_text().splitlines():
        row = json.loads(line)
        samples[row["id"]] = row
        if "duplicate_of" in row:
            planted[row["id"]] = row["duplicate_of"]
    embedder = load_embedder()
    index = PoolIndex.open(store=out / "demo-index")
    try:
        report = index_pool(world.pool, index=index, embedder=embedder, embedder_name=DEFAULT_EMBEDDER,
                            image_root=world.image_root, progress=False)
        build = report.seconds["total"]
        rows = []
        for threshold in THRESHOLDS:
            summary = dedup_store(index, Path(index.manifest.image_root), report.k, threshold)
            text_only = sum(1 for a in summary.duplicates if not samples[a].get("image"))
            rows.append({**summary.as_dict(), "ratio_to_build": round(summary.seconds / build, 4),
                         "text_only_marked": text_only, **planted_quality(summary.duplicates, planted)})
    finally:
        index.close()
    return {"pool": report.points, "clusters": report.k, "build_seconds": build,
            "build_stages": report.seconds, "embed_per_sample_s": report.seconds["embed"] / report.points,
            "thresholds": rows}


def vectors_100k(out: Path, n: int, embed_per_sample_s: float) -> dict:
    from benchmarks.store_scale import base_vectors, synthetic
    from tutorloop.retrieval.clusters import fit_clusters
    from tutorloop.retrieval.edge_index import EdgeIndex
    from tutorloop.retrieval.records import Sample
    from tutorloop.retrieval.semdedup import dedup_store

    base = base_vectors(out / "minilm-demo-pool.npy")
    vectors = np.vstack([synthetic(base, start, min(1024, n - start), seed=0) for start in range(0, n, 1024)])
    samples = [Sample.model_validate({"id": f"v{i:07d}", "conversations": [
        {"from": "human", "value": f"question {i}"}, {"from": "gpt", "value": "yes"}]}) for i in range(n)]
    index = EdgeIndex(out / "index-100k")
    try:
        start = time.perf_counter()
        sample = vectors[np.random.default_rng(0).choice(n, 4096, replace=False)]
        fit = fit_clusters(sample, "auto", seed=0)
        labels = fit.assign(vectors)
        index.prepare(vectors.shape[1], "bench")
        for s in range(0, n, 1024):
            index.upsert(samples[s : s + 1024], vectors[s : s + 1024], labels[s : s + 1024], "bench")
        index.shard.optimize()
        store_build = time.perf_counter() - start
        summary = dedup_store(index, out, fit.k, 0.95)
    finally:
        index.close()
    estimated_full = store_build + embed_per_sample_s * n
    sizes = np.bincount(labels, minlength=fit.k)
    return {"n": n, "clusters": fit.k, "largest_cluster": int(sizes.max()), "store_build_seconds": store_build,
            "dedup": summary.as_dict(), "ratio_to_store_build": round(summary.seconds / store_build, 4),
            "estimated_full_build_seconds": estimated_full,
            "ratio_to_estimated_full_build": round(summary.seconds / estimated_full, 4)}


def markdown(result: dict, command: str) -> str:
    demo, big = result["demo"], result["vectors"]
    lines = [
        "# SemDeDup at index time (benchmarks/semdedup.py)", "", f"`{command}`", "",
        f"Demo pool: {demo['pool']} samples, {demo['clusters']} clusters, index build "
        f"{demo['build_seconds']:.1f} s (de-duplication off); {demo['thresholds'][0]['planted']} planted "
        "near-duplicates.", "",
        "| threshold | seconds | / build | marked | groups | text-only marked | planted found | other marks (incl. text-only) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in demo["thresholds"]:
        lines.append(f"| {row['threshold']:.2f} | {row['seconds']:.2f} | {row['ratio_to_build']:.3f} | {row['marked']} "
                     f"| {row['groups']} | {row['text_only_marked']} | {row['planted_found']}/{row['planted']} "
                     f"| {row['other_marks']} |")
    d = big["dedup"]
    lines += [
        "", f"{big['n']:,} text vectors (MiniLM + noise, no images): {big['clusters']} clusters (largest "
        f"{big['largest_cluster']:,}); store build {big['store_build_seconds']:.1f} s; de-duplication at 0.95 "
        f"{d['seconds']:.1f} s = {big['ratio_to_store_build']:.3f} of the store build, "
        f"{big['ratio_to_estimated_full_build']:.3f} of the full build estimated with the demo run's embedding "
        f"rate ({big['estimated_full_build_seconds']:.0f} s); {d['marked']:,} marked in {d['groups']:,} groups "
        f"({d['candidates']:,} samples passed the text pre-filter and had their record read).",
        "", "Other marks are samples the planted list does not name: exact repeats of text-only questions, and "
        "the same question with the same answer over scenes whose thumbnails nearly coincide (the demo world "
        "draws scenes at random). Planted pairs missed are mostly re-worded questions whose text cosine is "
        "below 0.9 or that fell into another cluster (SemDeDup compares within clusters only).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorloop-semdedup"), help="scratch folder")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--n", type=int, default=100_000, help="vectors of part 2")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (1 on a shared 2-core box)")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/semdedup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with threadpool_limits(limits=args.threads):
        demo = demo_pool(args.out)
        big = vectors_100k(args.out, args.n, demo["embed_per_sample_s"])
    result = {"command": command, "threads": args.threads, "demo": demo, "vectors": big}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "semdedup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "semdedup.md").write_text(markdown(result, command))
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
