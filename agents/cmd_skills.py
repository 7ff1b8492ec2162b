"""`tutorloop skills`: the pool's skill map — fine clusters named by the teacher, in skills.json beside the index.

A sub-command of its own rather than a step of `index`: indexing needs no teacher and is re-run as the
pool changes, while the map is one teacher call per cluster, worth building once against a strong
teacher (vLLM) and then reviewing or editing by hand. Re-running keeps an existing map that matches the
index (applying a hand edit to the payload); ``--rebuild`` clusters and names again, where replies the
teacher gave before come from its cache, so a killed build resumes where it stopped. A pool that tags
its samples (the dataset or task each came from) can be named by that tag instead (``--names-from``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HELP = "name the pool's skills: fine clusters, one teacher call each, into skills.json beside the index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tutorloop.agents.config import DEFAULT_STORE

    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path, help=f"folder of the embedded index (default: {DEFAULT_STORE})")
    where.add_argument("--qdrant-url", help="a Qdrant server instead of --store (API key from $QDRANT_API_KEY)")
    parser.add_argument("--collection", default="pool", help="collection of the pool (default: pool)")
    namer = parser.add_mutually_exclusive_group(required=True)
    namer.add_argument("--teacher", help="OpenAI-compatible base URL of the teacher that names the clusters")
    namer.add_argument("--names-from", metavar="FIELD",
                       help="name each cluster by the pool's own tag FIELD instead (e.g. source: the dataset or "
                            "task a sample came from), the most common among its points; no teacher call")
    parser.add_argument("--teacher-model", default="teacher", help="model name the endpoint serves (default: teacher)")
    parser.add_argument("--teacher-dialect", default="auto", choices=["auto", "json_schema", "json_object"],
                        help="structured-output dialect: json_schema (vLLM/OpenAI), json_object (llama.cpp), auto")
    parser.add_argument("--text-only", action="store_true", help="do not send the samples' images (text-only teacher)")
    parser.add_argument("--concurrency", type=int, default=16, help="teacher requests in flight (default: 16)")
    parser.add_argument("--clusters", type=int, help="fine clusters k (default: clamp(round(sqrt(N/2)), 32, 1024))")
    parser.add_argument("--near", type=int, default=4, help="samples shown per cluster nearest its centroid (default: 4)")
    parser.add_argument("--spread", type=int, default=2, help="samples shown per cluster drawn at random (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means and the random samples (default: 0)")
    parser.add_argument("--out", type=Path, help="skills.json path (default: beside the index)")
    parser.add_argument("--rebuild", action="store_true", help="cluster and name again even if a map exists")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tutorloop.agents.config import DEFAULT_STORE
    from tutorloop.agents.skills import (
        SkillMapError,
        apply_skill_map,
        build_skill_map,
        is_applied,
        load_skill_map,
        map_path,
    )
    from tutorloop.agents.teacher_config import TeacherConfig
    from tutorloop.retrieval.index import PoolIndex

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = None if args.qdrant_url else (args.store or DEFAULT_STORE)
    path = args.out or map_path(store, args.collection, qdrant_url=args.qdrant_url)
    try:
        index = PoolIndex.open(store=store, url=args.qdrant_url, collection=args.collection)
    except (ValueError, OSError) as error:
        print(f"tutorloop skills: {error}", file=sys.stderr)
        return 2
    try:
        if index.read_manifest() is None:
            print(f"tutorloop skills: no index in {store or args.qdrant_url} (collection {args.collection!r}): "
                  "run `tutorloop index` first", file=sys.stderr)
            return 2
        if path.is_file() and not args.rebuild:
            skill_map = load_skill_map(path)
            if skill_map.points == index.count():
                if not is_applied(path):
                    apply_skill_map(index, skill_map, path)
                    print(f"{path} was edited since it was applied: applied to the index", file=sys.stderr)
                else:
                    print(f"kept {path} (--rebuild to name the clusters again)", file=sys.stderr)
                Console().print(_table(skill_map, path, Table))
                return 0
            print(f"{path} was built for {skill_map.points} points, the index has {index.count()}: rebuilding",
                  file=sys.stderr)
        teacher = None if args.names_from else TeacherConfig(
            base_url=args.teacher, model=args.teacher_model, dialect=args.teacher_dialect,
            send_images=not args.text_only, concurrency=args.concurrency, progress=sys.stderr.isatty())
        skill_map = build_skill_map(index, teacher, path, k=args.clusters, seed=args.seed, near=args.near,
                                    spread=args.spread, collection=args.collection, names_from=args.names_from)
    except SkillMapError as error:
        print(f"tutorloop skills: {error}", file=sys.stderr)
        return 2
    finally:
        index.close()
    Console().print(_table(skill_map, path, Table))
    return 0 if skill_map.skills else 1


def _table(skill_map, path: Path, table_class) -> object:
    table = table_class(title=f"skill map {path}: {len(skill_map.skills)} skills from {skill_map.k} clusters "
                              f"({len(skill_map.unnamed)} unnamed); naming cost {skill_map.cost.requests} requests, "
                              f"{skill_map.cost.seconds:.1f} s")
    for column in ("skill", "category", "clusters", "points", "description"):
        table.add_column(column)
    for skill in skill_map.skills:
        table.add_row(skill.name, skill.category, str(len(skill.clusters)), str(skill.size), skill.description)
    return table
