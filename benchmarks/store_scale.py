"""The embedded store (qdrant-edge) at pool scale: indexing, the loop's query, memory.

Vectors: real all-MiniLM-L6-v2 embeddings of the demo pool's instructions (6,000 texts, the ones
`tutorloop index` embeds), and for larger sizes those vectors plus seeded Gaussian noise (sd 0.015 per
dimension — a noise vector of norm ~0.3 — renormalised), so neighbourhoods look like a real pool's
(which repeats its instructions with variations) and no two points coincide. Read the recall with care:
the demo pool's 6,000 instructions are only 287 distinct texts (it is templated), so at 1M points each
distinct vector has ~3,500 noisy copies whose cosines to a query made the same way are 0.921 +/- 0.005 —
the top 50 is chosen among thousands of near-ties by the noise alone. Beside recall@50 by id, each row
therefore gives the share of returned points that score at least the exact 50th score (a tie counts as
found) and the mean gap between the exact and the returned 50th score. Each
payload is a realistic record (~400 bytes, as `tutorloop index` stores). Every (engine, size) runs in
its own process, so its peak RSS is its own:

- upsert points/s (batches of 1,024, streamed: the vectors are made batch by batch, never all at once),
- index build seconds (``optimize()`` builds the HNSW graph),
- top-50 query p50/p95 with a 10,000-id exclusion filter (the ids already trained on), 200 queries,
- the product's query (retrieval.index.without_excluded: over-fetch unfiltered, drop the trained ids, the
  filter only as a fallback) on that exclusion and on one crowding each query's own 60 nearest,
- recall@50 of that query against exact search with the same filter,
- the same query without the exclusion filter (what the filter itself costs),
- the recall-latency curve of the product's query over the search-time ``ef`` (``--ef``), for each graph
  built (``--hnsw M:EF_CONSTRUCT``, one build each): what the product's HNSW settings are chosen from,
- reopen seconds (load + first query) and peak RSS (indexing, and after reopening): VmHWM counts the
  store's file pages mapped in memory too (page cache the kernel can drop), so the peaks of anonymous
  memory (RssAnon: heap the engine needs) and of mapped file pages (RssFile) are sampled apart, every
  20 ms (a shorter spike can be missed), and from the parent every 0.5 s as a curve over the run
  (``memory_curve``: seconds, anonymous MB, mapped-file MB, phase; the graph build holds the child's GIL, so
  only the parent sees it). The benchmark's own arrays (6,000 base vectors, one batch) are ~10 MB of that:
  ``rss_mb_before_store``.

    .venv/bin/python benchmarks/store_scale.py --sizes 100000,1000000
    .venv/bin/python benchmarks/store_scale.py --sizes 1000000 --hnsw 16:100,32:200 --ef 128,256,512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NOISE_SD = 0.015  # per dimension: a noise vector of norm ~0.3 around a unit base vector
BATCH = 1024
QUERIES = {"edge": 200, "edge-disk": 200}
EXCLUDED = 10_000
TOP = 50


def base_vectors(cache: Path) -> np.ndarray:
    """MiniLM vectors of the demo pool's instructions (built once, cached as .npy)."""
    if cache.exists():
        return np.load(cache)
    from tutorloop.demo.build import build_world
    from tutorloop.retrieval.embed import embed_texts, load_embedder, sample_text
    from tutorloop.retrieval.ingest import Accepted, iter_samples

    world = build_world(cache.parent / "world", with_student=False, progress=False)
    texts = [sample_text(r.sample) for r in iter_samples(world.pool, world.image_root, check_images=False)
             if isinstance(r, Accepted)]
    vectors = embed_texts(load_embedder(), texts, 64).astype(np.float32)
    np.save(cache, vectors)
    return vectors


def synthetic(base: np.ndarray, start: int, n: int, seed: int) -> np.ndarray:
    """Points start..start+n: base vector (i mod len(base)) + noise seeded by the batch start."""
    rng = np.random.default_rng([seed, start])
    rows = base[np.arange(start, start + n) % len(base)]
    noisy = rows + rng.normal(0, NOISE_SD, rows.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def record(i: int) -> dict:
    return {"sample_id": f"pool-{i:07d}", "source": f"skill-{i % 40}", "cluster": i % 64, "run": "bench",
            "image": f"images/{i:07d}.png", "instruction": f"what colour is the shape on the left? ({i})",
            "record": {"id": f"pool-{i:07d}", "image": f"images/{i:07d}.png", "source": f"skill-{i % 40}",
                       "conversations": [{"from": "human", "value": f"<image>\nwhat colour is the shape on the left? ({i})"},
                                         {"from": "gpt", "value": "blue"}]}}


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"pool-{i:07d}"))


def rss_mb(pid: int | str = "self") -> dict[str, float]:
    """RssAnon and RssFile of a process in MB (VmHWM has only their sum)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines()
            if line.startswith(("RssAnon:", "RssFile:"))}


def announce(phase: str) -> None:
    """The child's phase, said on stderr with the time: the parent labels its memory curve with it."""
    print(f"PHASE {phase} {time.monotonic()}", file=sys.stderr, flush=True)


class RssSampler:
    """Peaks of RssAnon and RssFile of this process, sampled in a thread."""

    def __init__(self, every_s: float = 0.02) -> None:
        import threading

        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self.sample()
        self.before = dict(self.peak)  # libraries and the base vectors, before any store
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.sample()

    def sample(self) -> None:
        for key, mb in rss_mb().items():
            self.peak[key] = max(self.peak[key], mb)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak_rss_anon_mb": round(self.peak["RssAnon"]), "peak_rss_file_mb": round(self.peak["RssFile"]),
                "rss_anon_file_mb_before_store": [round(self.before["RssAnon"]), round(self.before["RssFile"])]}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- one engine, one size (a child process) -----------------------------------------------------


class Edge:
    on_disk = False  # the product's store: vectors, payloads and the graph in memory-mapped segments

    def __init__(self, path: Path, dim: int, create: bool, hnsw: tuple[int, int] = (16, 100), ef: int = 128) -> None:
        import qdrant_edge as e

        self.e = e
        self.ef = ef  # the search-time ef of query(); the run sets it per point of the curve
        if create:
            disk = {"on_disk": True} if self.on_disk else {}
            graph = e.HnswIndexConfig(m=hnsw[0], ef_construct=hnsw[1], full_scan_threshold=10_000)
            config = e.EdgeConfig(vectors=e.EdgeVectorParams(size=dim, distance=e.Distance.Cosine, **disk),
                                  hnsw_config=graph, **({"on_disk_payload": True} if self.on_disk else {}))
            self.shard = e.EdgeShard.create(str(path), config)
            for name, kind in (("sample_id", e.PayloadSchemaType.Keyword), ("cluster", e.PayloadSchemaType.Integer)):
                self.shard.update(e.UpdateOperation.create_field_index(name, kind))
        else:
            self.shard = e.EdgeShard.load(str(path))

    def upsert(self, start: int, vectors: np.ndarray) -> None:
        e = self.e
        self.shard.update(e.UpdateOperation.upsert_points(
            [e.Point(point_id(start + j), v.tolist(), record(start + j)) for j, v in enumerate(vectors)]))

    def build(self) -> None:
        self.shard.optimize()
        self.shard.flush()

    def exclusion(self, ids: list[str]) -> object:  # built once per round, as EdgeIndex caches it
        return self.e.Filter(must_not=[self.e.HasIdCondition(set(ids))])

    def query(self, vector: np.ndarray, exclude: object, exact: bool, limit: int = TOP) -> list[tuple[str, float]]:
        e = self.e
        request = e.QueryRequest(limit=limit, query=e.Query.Nearest(vector.tolist()), filter=exclude,
                                 with_payload=False, params=e.SearchParams(exact=exact, hnsw_ef=max(self.ef, limit)))
        return [(str(p.id), float(p.score)) for p in self.shard.query(request)]

    def close(self) -> None:
        self.shard.close()


class EdgeOnDisk(Edge):
    """Vectors and payloads asked to stay on disk (``on_disk``, ``on_disk_payload``): what it does to memory."""

    on_disk = True


def product_query(store: Edge, vector: np.ndarray, excluded: frozenset[str], flt: object) -> list[tuple[str, float]]:
    """The embedded index's query (retrieval/edge_index.py): over-fetch unfiltered, the id filter only as a fallback."""
    from tutorloop.retrieval.index import without_excluded

    return without_excluded(lambda k, ids: store.query(vector, flt if ids else None, exact=False, limit=k), TOP,
                            excluded, key=lambda hit: hit[0], score=lambda hit: hit[1])


ENGINES = {"edge": Edge, "edge-disk": EdgeOnDisk}


def ef_curve(store: Edge, queries: np.ndarray, truths: list, excluded: frozenset[str], flt: object,
             efs: list[int]) -> list[dict]:
    """The product's query (random exclusion) at each search-time ef: latency and recall@50 against exact."""
    points = []
    for ef in efs:
        store.ef = ef
        seconds, recalls = [], []
        for q, truth in zip(queries, truths, strict=True):
            t = time.perf_counter()
            got = product_query(store, q, excluded, flt)
            seconds.append(time.perf_counter() - t)
            recalls.append(len({i for i, _ in got} & {i for i, _ in truth}) / len(truth))
        ms = sorted(1000 * x for x in seconds)
        points.append({"ef": ef, "ms_p50": round(statistics.median(ms), 2), "ms_p95": round(ms[int(0.95 * len(ms)) - 1], 2),
                       "recall_at_50": round(statistics.fmean(recalls), 4)})
    store.ef = efs[0]
    return points


def run_one(engine: str, n: int, base: np.ndarray, work: Path, seed: int = 0, hnsw: tuple[int, int] = (16, 100),
            efs: tuple[int, ...] = (128,)) -> dict:
    kind = ENGINES[engine]
    baseline = peak_rss_mb()  # the interpreter, numpy and the base vectors, before any store
    sampler = RssSampler()
    path = work / f"{engine}-{n}"
    shutil.rmtree(path, ignore_errors=True)
    store = kind(path, base.shape[1], create=True, hnsw=hnsw, ef=efs[0])
    announce("upsert")
    start = time.perf_counter()
    for lo in range(0, n, BATCH):
        store.upsert(lo, synthetic(base, lo, min(BATCH, n - lo), seed))
    upsert_s = time.perf_counter() - start
    announce("build")
    start = time.perf_counter()
    store.build()
    build_s = time.perf_counter() - start
    rss_indexing = peak_rss_mb()
    announce("query")
    rng = np.random.default_rng(seed + 1)
    queries = synthetic(base, n + 7, QUERIES[engine], seed + 2)  # other noise: points that are not in the store
    excluded = [point_id(int(i)) for i in rng.choice(n, size=min(EXCLUDED, n // 2), replace=False)]
    exclude = store.exclusion(excluded)
    latencies, recalls, tie_recalls, gaps, unfiltered, truths = [], [], [], [], [], []
    # the product's path (retrieval.index.without_excluded): the random exclusion, and one crowding each query's
    # own neighbourhood (its 60 nearest trained, as a later round's queries for the same gap meet them)
    excluded_set = frozenset(excluded)
    crowded_set = excluded_set | {i for q in queries for i, _ in store.query(q, None, exact=True, limit=60)}
    crowded = store.exclusion(sorted(crowded_set))
    overfetch: dict[str, list[float]] = {"random": [], "crowded": []}
    overfetch_recall: dict[str, list[float]] = {"random": [], "crowded": []}
    crowded_filter, crowded_recall = [], []
    for q in queries:
        t = time.perf_counter()
        found = store.query(q, exclude, exact=False)
        latencies.append(time.perf_counter() - t)
        truth = store.query(q, exclude, exact=True)
        truths.append(truth)
        recalls.append(len({i for i, _ in found} & {i for i, _ in truth}) / len(truth))
        kth = truth[-1][1]  # a returned point scoring at least the exact 50th is as good as a true one
        tie_recalls.append(sum(score >= kth - 1e-6 for _, score in found) / len(truth))
        gaps.append(kth - found[-1][1])
        t = time.perf_counter()
        store.query(q, None, exact=False)
        unfiltered.append(time.perf_counter() - t)
        for case, ids, flt in (("random", excluded_set, exclude), ("crowded", crowded_set, crowded)):
            t = time.perf_counter()
            got = product_query(store, q, ids, flt)
            overfetch[case].append(time.perf_counter() - t)
            want = truth if case == "random" else store.query(q, flt, exact=True)
            overfetch_recall[case].append(len({i for i, _ in got} & {i for i, _ in want}) / len(want))
            if case == "crowded":
                t = time.perf_counter()
                filtered = store.query(q, flt, exact=False)
                crowded_filter.append(time.perf_counter() - t)
                crowded_recall.append(len({i for i, _ in filtered} & {i for i, _ in want}) / len(want))
    curve = ef_curve(store, queries, truths, excluded_set, exclude, list(efs))
    store.close()
    announce("reopen")
    start = time.perf_counter()
    store = kind(path, base.shape[1], create=False)
    store.query(queries[0], store.exclusion(excluded), exact=False)
    reopen_s = time.perf_counter() - start
    store.close()
    memory = sampler.stop()
    shutil.rmtree(path, ignore_errors=True)
    ms = sorted(1000 * x for x in latencies)
    no_filter_ms = sorted(1000 * x for x in unfiltered)
    return {"engine": engine, "points": n, "hnsw_m": hnsw[0], "hnsw_ef_construct": hnsw[1], "hnsw_ef": efs[0],
            "ef_curve": curve, "upsert_points_per_s": round(n / upsert_s), "build_s": round(build_s, 2),
            "query_ms_p50": round(statistics.median(ms), 2), "query_ms_p95": round(ms[int(0.95 * len(ms)) - 1], 2),
            "query_ms_p50_no_filter": round(statistics.median(no_filter_ms), 2) if no_filter_ms else None,
            **({f"overfetch_{case}_ms_p50": round(1000 * statistics.median(v), 2) for case, v in overfetch.items() if v}),
            **({f"overfetch_{case}_ms_p95": round(1000 * sorted(v)[int(0.95 * len(v)) - 1], 2)
                for case, v in overfetch.items() if v}),
            **({f"overfetch_{case}_recall_at_50": round(statistics.fmean(v), 4)
                for case, v in overfetch_recall.items() if v}),
            **({"crowded_filter_ms_p50": round(1000 * statistics.median(crowded_filter), 2),
                "crowded_filter_recall_at_50": round(statistics.fmean(crowded_recall), 4),
                "crowded_excluded": len(crowded_set)} if crowded_filter else {}),
            "recall_at_50": round(statistics.fmean(recalls), 4),
            "recall_at_50_ties_found": round(statistics.fmean(tie_recalls), 4),
            "score_gap_50th": round(statistics.fmean(gaps), 5), "reopen_s": round(reopen_s, 2),
            "peak_rss_mb_indexing": round(rss_indexing), "peak_rss_mb_total": round(peak_rss_mb()), **memory,
            "rss_mb_before_store": round(baseline),
            "raw_vectors_mb": round(n * base.shape[1] * 4 / 2**20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--engines", default="edge", help="edge (the product's store), edge-disk (vectors and "
                        "payloads on disk), comma-separated")
    parser.add_argument("--hnsw", default="16:100", help="graphs to build, M:EF_CONSTRUCT comma-separated (one "
                        "build each; 16:100 is Qdrant's default)")
    parser.add_argument("--ef", default="128", help="search-time ef values measured on each graph, comma-separated; "
                        "the first is the ef of every other row")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tutorloop-store-scale")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "store_scale.json")
    parser.add_argument("--one", nargs=3, metavar=("ENGINE", "N", "HNSW"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    base = base_vectors(args.work / "minilm-demo-pool.npy")
    efs = tuple(int(x) for x in args.ef.split(","))
    if args.one:
        m, ef_construct = (int(x) for x in args.one[2].split(":"))
        print(json.dumps(run_one(args.one[0], int(args.one[1]), base, args.work, hnsw=(m, ef_construct), efs=efs)))
        return 0
    jobs = [(engine, int(n), graph) for engine in args.engines.split(",") for n in args.sizes.split(",") if n
            for graph in args.hnsw.split(",")]
    distinct = len(np.unique(base.round(5), axis=0))
    rows = []
    for engine, n, graph in jobs:
        returncode, out, err, curve = run_child([sys.executable, __file__, "--one", engine, str(n), graph, "--ef",
                                                 args.ef, "--work", str(args.work)])
        if returncode != 0:
            rows.append({"engine": engine, "points": n, "hnsw": graph,
                         "failed": [line for line in err.splitlines() if not line.startswith("PHASE ")][-1:]})
        else:
            rows.append({**json.loads(out.strip().splitlines()[-1]), "memory_curve": curve,
                         "peak_rss_anon_mb_sampled_outside": max((a for _, a, _, _ in curve), default=None)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "memory_curve"}), flush=True)
        write_results(args, argv, base, distinct, rows)  # after every row: a long grid cut short keeps its rows
    return 0


def run_child(command: list[str], every_s: float = 0.5) -> tuple[int, str, str, list]:
    """Run one (engine, size) child, sampling its memory from here every ``every_s``: (return code, stdout,
    stderr, curve of [seconds, anonymous MB, mapped-file MB, phase]). Sampled from outside because the engine's
    graph build holds the child's GIL for its whole length, so a thread in the child sees nothing of it."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        began, samples = time.monotonic(), []
        while child.poll() is None:
            try:
                mb = rss_mb(child.pid)
            except OSError:
                break
            samples.append((time.monotonic(), round(mb.get("RssAnon", 0)), round(mb.get("RssFile", 0))))
            time.sleep(every_s)
        child.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    phases = [(float(t), name) for name, t in (line.split()[1:3] for line in stderr.splitlines()
                                                if line.startswith("PHASE "))]
    curve = [[round(t - began, 1), anon, mapped, next((name for at, name in reversed(phases) if at <= t), "start")]
             for t, anon, mapped in samples]
    return child.returncode, stdout, stderr, curve


def write_results(args: argparse.Namespace, argv: list[str] | None, base: np.ndarray, distinct: int,
                  rows: list[dict]) -> None:
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "command": "benchmarks/store_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "vectors": f"MiniLM vectors of the demo pool ({len(base)} texts, {distinct} distinct) + N(0, {NOISE_SD}) "
                   f"noise, renormalised: ~N/{distinct} noisy copies of each distinct vector",
        "machine": f"{os.cpu_count()} CPUs", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
