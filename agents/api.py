"""The Python API: index a pool, run (or resume) the loop, evaluate a student. The CLI, the demo and the
benchmarks call these; so can a notebook:

    from tutorloop.agents import api
    api.index(api.IndexConfig(pool="pool.jsonl", store="index"))
    config = api.RunConfig(student="student/", val="val.jsonl", store="index", budget=300, rounds=1,
                           selector="failures", out="runs/first")
    summary = api.run(config)          # one round: evaluate, plan, select, LoRA-train, evaluate
    print(summary.final.val_accuracy)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from tutorloop.agents.config import IndexConfig, RunConfig, merge
from tutorloop.agents.records import RunInfo, RunSummary
from tutorloop.agents.run_dir import RunDir
from tutorloop.retrieval.files import atomic_write_text
from tutorloop.retrieval.tables import table_files

__all__ = ["IndexConfig", "RunConfig", "ensure_index", "ensure_skill_map", "evaluate", "export", "index", "resume",
           "run"]

INDEX_COMPLETE = ".complete"  # marks a store that `ensure_index` built to the end


def index(config: IndexConfig, *, embedder: Any = None, pool_index: Any = None):
    """Ingest, embed, cluster and upsert the pool; returns the IndexReport (counts, clusters, seconds).

    ``embedder`` and ``pool_index`` may be given (tests, a shared server client); else they are opened from
    the config and the index is closed at the end."""
    from tutorloop.retrieval.embed import load_embedder, resolve_embedder_name
    from tutorloop.retrieval.index import PoolIndex, index_pool

    target = pool_index or PoolIndex.open(store=config.store, url=config.qdrant_url, collection=config.collection)
    try:
        if config.ray:
            from tutorloop.retrieval.ray_index import index_pool_ray

            return index_pool_ray(
                config.pool, index=target, embedder_name=resolve_embedder_name(config.embedder),
                image_root=config.image_root, clusters=config.clusters, batch_size=config.batch_size,
                cluster_sample=config.cluster_sample, quarantine_path=config.quarantine,
                check_images=config.check_images, seed=config.seed,
                address=None if config.ray == "local" else config.ray, actors=config.ray_actors,
                semdedup_threshold=config.semdedup_threshold)
        return index_pool(
            config.pool, index=target, embedder=embedder or load_embedder(config.embedder),
            embedder_name=resolve_embedder_name(config.embedder), image_root=config.image_root,
            clusters=config.clusters, batch_size=config.batch_size, cluster_sample=config.cluster_sample,
            quarantine_path=config.quarantine, check_images=config.check_images, seed=config.seed,
            progress=config.progress, semdedup_threshold=config.semdedup_threshold)
    finally:
        if pool_index is None:
            target.close()


def ensure_index(config: IndexConfig, *, rebuild: bool = False) -> Path:
    """Index into ``config.store`` once; a later call reuses a store that was built to the end from the same pool.

    The store remembers what it was built from (the pool's files by name, size and modification time, the
    embedder, the collection). A store built from anything else is refused with the differences, unless
    ``rebuild``: then it is emptied and built again."""
    if config.store is None:
        raise ValueError("ensure_index needs an embedded store (--store)")
    marker = config.store / INDEX_COMPLETE
    wanted = pool_fingerprint(config)
    if marker.exists():
        built = _read_fingerprint(marker)
        if built == wanted:
            return config.store
        if not rebuild:
            raise ValueError(f"store {config.store} was built from another pool ({_differences(built, wanted)}); "
                             "give another --store, or rebuild it (ensure_index(..., rebuild=True))")
        shutil.rmtree(config.store)  # ours: the marker says this function built it
    report = index(config)
    counts = report.counts
    print(f"indexed {counts['accepted']} of {counts['read']} pool samples ({report.k} clusters)", file=sys.stderr)
    atomic_write_text(marker, json.dumps(wanted, indent=1) + "\n")
    return config.store


def pool_fingerprint(config: IndexConfig) -> dict[str, Any]:
    """What a store's content follows from: each pool data file (name, size, mtime), the embedder, the collection."""
    pool = Path(config.pool).resolve()
    files = [pool] if pool.is_file() else [f for _, f in table_files(pool)]
    return {"pool": str(pool), "embedder": config.embedder, "collection": config.collection,
            "files": {str(f.relative_to(pool) if pool.is_dir() else f.name): [f.stat().st_size, f.stat().st_mtime_ns]
                      for f in files}}


def _read_fingerprint(marker: Path) -> dict[str, Any]:
    try:
        return json.loads(marker.read_text())
    except ValueError:  # a marker without a fingerprint: what the store was built from is unknown
        return {}


def _differences(built: dict[str, Any], wanted: dict[str, Any]) -> str:
    if not built:
        return "the store does not say which"
    changed = [f"{key} {built.get(key)} → {wanted[key]}" for key in ("pool", "embedder", "collection")
               if built.get(key) != wanted[key]]
    old, new = built.get("files", {}), wanted["files"]
    changed += [f"{name} changed" for name in sorted(set(old) & set(new)) if old[name] != new[name]]
    changed += [f"{name} added" for name in sorted(set(new) - set(old))]
    changed += [f"{name} gone" for name in sorted(set(old) - set(new))]
    return "; ".join(changed) or "its record is of another form"


def ensure_skill_map(store: Path, *, teacher: Any = None, names_from: str | None = None) -> Path:
    """The skill map beside the embedded index ``store`` (agents/skills.py), named by ``teacher`` (a
    TeacherConfig) or by the pool's tag ``names_from`` when there is none; a map that is there is kept
    (whoever named it) unless the index's point count no longer matches it. A store another run is reading
    is waited for, as a run waits. Returns the map's path."""
    from tutorloop.agents.runtime import STORE_WAIT_S
    from tutorloop.agents.skills import build_skill_map, load_skill_map, map_path
    from tutorloop.retrieval.index import PoolIndex

    path = map_path(store, "pool")
    index = PoolIndex.open_when_free(STORE_WAIT_S, store=store)
    try:
        # a hand edit not yet applied is kept too: the run applies it (agents.skills.open_map)
        if not (path.is_file() and load_skill_map(path).points == index.count()):
            skill_map = build_skill_map(index, teacher, path, names_from=names_from)
            print(f"skill map: {len(skill_map.skills)} skills from {skill_map.k} clusters -> {path}", file=sys.stderr)
    finally:
        index.close()
    return path


def run(config: RunConfig, *, run_id: str | None = None, pool_index: Any = None, embedder: Any = None) -> RunSummary:
    """Run the loop for a validated config, or resume it when ``config.out`` holds an unfinished run of it.

    The run id is the checkpointer's thread: a new run gets a fresh one unless given, a resumed run keeps
    the one in ``run.json``."""
    from tutorloop.agents.graph import run_loop
    from tutorloop.agents.runtime import Runtime

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    run_dir = RunDir(config.out)
    if run_id is None:
        run_id = run_dir.read_info().run_id if run_dir.exists() else uuid.uuid4().hex
    runtime = Runtime(config=config, run_dir=run_dir, index=pool_index, embedder=embedder)
    try:
        run_dir.write_info(RunInfo(run_id=run_id, config=config.model_dump(mode="json"),
                                   pool_image_root=str(runtime.pool_image_root), skill_map=_skill_map(config)))
        run_loop(runtime, run_id)
    finally:
        if pool_index is None:
            runtime.close()
    return run_dir.read_summary()


def _skill_map(config: RunConfig) -> dict | None:
    """Teacher runs say whether a skill map grounds their diagnoses (log line + run.json)."""
    from tutorloop.agents.selectors import get_selector
    from tutorloop.agents.skills import map_status

    if not get_selector(config.selector).needs_teacher:
        return None
    status = map_status(config.teacher.skill_map, config.store, config.collection, config.qdrant_url)
    print(f"skill map: {'used' if status['used'] else 'not used'} — {status['reason']}"
          + (f" ({status['path']}, {status['skills']} skills)" if status["used"] else ""), file=sys.stderr)
    return status


def resume(out: Path, overrides: dict[str, Any] | None = None) -> RunSummary:
    """Resume the run in ``out`` with the config it was started with (``overrides`` on top)."""
    info = RunDir(out).read_info()
    config = RunConfig.model_validate(merge(info.config, overrides or {}))
    return run(config, run_id=info.run_id)


def export(run_dir: Path, out: Path, *, form: str | None = None, rounds: str | int = "all",
           image_root: Path | None = None, progress: bool = False):
    """A run's selected samples of ``rounds`` ("all", or N: rounds 1..N) as ``out/selected.jsonl`` with every
    image a file under ``out/images/`` (table images decoded), paths relative to ``out``; returns the
    ExportReport (agents/export.py)."""
    from tutorloop.agents.export import export_run

    return export_run(run_dir, out, form=form, rounds=rounds, image_root=image_root, progress=progress)


def evaluate(student: str | Path, data: Path, *, adapter: Path | None = None, image_root: Path | None = None,
             **settings: Any):
    """The student (with an optional adapter) on a data file; ``settings``: matcher, batch_size,
    max_new_tokens, progress (training/evaluate.py's defaults)."""
    from tutorloop.retrieval.ingest import default_image_root, load_samples
    from tutorloop.training.evaluate import evaluate as evaluate_student
    from tutorloop.training.student import load_student

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = image_root or default_image_root(data)
    return evaluate_student(load_student(student, adapter=adapter), load_samples(data, root), root, **settings)
