"""`tutorloop index --ray [ADDRESS]`: read → validate → embed as a Ray Data pipeline, for pools that
outgrow one machine.

The pool is split into read tasks (JSONL by byte range, a table by file, a JSON array as one task); each
task parses and validates its records (image checks included) where Ray runs it; accepted records are
embedded by an actor pool that loads the embedder once per actor (``num_gpus`` per actor when the
cluster has GPUs) and assigns each vector its cluster; the driver streams the results, in order, into the
same index, quarantine and counts as the single-process path (retrieval/index.py): duplicate ids are
judged there, in file order, so the points, ids, clusters and quarantine are the same. The clusters are
fitted first on a seeded sample, exactly as on one machine.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.retrieval.clusters import ClusterSpec, fit_clusters
from tutorloop.retrieval.embed import embed_texts, embedding_dim, load_embedder, sample_text
from tutorloop.retrieval.index import (
    IndexReport,
    PoolIndex,
    _Clock,
    _reservoir,
    _UpsertWriter,
    finalize,
)
from tutorloop.retrieval.ingest import (
    Accepted,
    IngestTally,
    Rejected,
    _ImageChecker,
    _iter_json_array,
    _text,
    _validate,
    fallback_id,
    no_valid_record,
    optional_quarantine,
)
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.tables import is_table, iter_file_rows, row_counts, table_files

RANGE_BYTES = 32 << 20  # one read task per 32 MB of JSONL


def index_pool_ray(pool_path: Path | str, *, index: PoolIndex, embedder_name: str, image_root: Path | str | None = None,
                   clusters: ClusterSpec = "auto", batch_size: int = 1024, cluster_sample: int = 4096,
                   quarantine_path: Path | str | None = None, check_images: bool = True, seed: int = 0,
                   address: str | None = None, actors: int | None = None,
                   semdedup_threshold: float | None = None) -> IndexReport:
    """The `index_pool` stage on Ray (a local cluster when ``address`` is None); same report. De-duplication
    (``semdedup_threshold``) runs in the driver after the writes, in the shared `finalize`."""
    import ray

    from tutorloop.retrieval.ingest import default_image_root

    pool_path = Path(pool_path)
    root = Path(image_root).resolve() if image_root is not None else default_image_root(pool_path)
    clock, start = _Clock(), time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}})
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # file order: duplicates

    t = time.perf_counter()
    sample_lines, sample_texts, n_records = _reservoir(pool_path, root, cluster_sample, seed)
    embedder = load_embedder(embedder_name)
    fit = fit_clusters(embed_texts(embedder, sample_texts, 64), clusters, seed=seed)
    t = clock.add("cluster", t)
    if not sample_lines:
        raise no_valid_record(Path(pool_path), root, Path(quarantine_path) if quarantine_path else None)
    kept = index.prepare(embedding_dim(embedder), embedder_name)
    run, tally, seen = uuid.uuid4().hex, IngestTally(), set()
    writer = _UpsertWriter(index, run, clock)
    gpus = ray.cluster_resources().get("GPU", 0)
    # One actor per GPU; on CPUs one per two cores, each embedding with two threads. Read tasks ask for half
    # a CPU: parsing is light, and with whole CPUs the actors would leave them none (a stall seen at 2 CPUs).
    cpus = int(ray.cluster_resources().get("CPU", 2))
    n_actors = actors or (int(gpus) if gpus else max(1, cpus // 2))
    threads = 1 if gpus else max(1, cpus // n_actors)
    dataset = ray.data.read_datasource(_pool_source(pool_path, root, check_images),
                                       num_cpus=0.5).map_batches(
        _Embedder, fn_constructor_args=(embedder_name, fit, threads), batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=n_actors), num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
        batch_format="pandas")
    quarantine = Path(quarantine_path) if quarantine_path is not None else None
    with optional_quarantine(quarantine, pool_path) as sink:
        for frame in dataset.iter_batches(batch_size=batch_size, batch_format="pandas"):
            samples, vectors, labels = [], [], []
            for row in frame.itertuples(index=False):
                result = _result(row)
                if isinstance(result, Accepted) and result.sample.id in seen:
                    result = Rejected(row.line, "duplicate_id", f"id {result.sample.id!r} already seen earlier in the file",
                                      row.raw)
                tally.add(result)
                if isinstance(result, Rejected):
                    if sink is not None:
                        sink.write(result)
                    continue
                seen.add(result.sample.id)
                samples.append(result.sample)
                vectors.append(row.vector)
                labels.append(row.cluster)
            if samples:
                writer.submit(samples, np.asarray(vectors, dtype=np.float32), np.asarray(labels))
        writer.close()
    return finalize(index, pool_path, root, embedder_name, embedding_dim(embedder), fit, tally, run, kept=kept,
                    quarantine=quarantine, clock=clock, start=start, semdedup_threshold=semdedup_threshold)


def _result(row: Any) -> Accepted | Rejected:
    if row.reason:
        return Rejected(int(row.line), row.reason, row.detail, row.raw)
    return Accepted(int(row.line), Sample.model_validate(json.loads(row.record)))


# --- the read tasks ---------------------------------------------------------------------------------


def _pool_source(path: Path, root: Path, check_images: bool) -> Any:
    """A Ray Data datasource over a pool file: its read tasks validate records where they run."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PoolSource(Datasource):
        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            return [ReadTask(lambda unit=unit: _validated_blocks(path, root, check_images, unit),
                             BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None))
                    for unit in _read_units(path)]

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_name(self) -> str:
            return "tutorloop-pool"

    return PoolSource()


def _read_units(path: Path) -> list[tuple]:
    """("table", kind, file, first row) per table file, ("array",) for a JSON array, ("range", start, end,
    first line) per slice of JSONL; first rows and lines are counted here, once."""
    if is_table(path):
        firsts = np.cumsum([0, *row_counts(path)])[:-1] + 1
        return [("table", kind, file, int(first)) for (kind, file), first in zip(table_files(path), firsts, strict=True)]
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return [("array",)]
    units, size, line = [], path.stat().st_size, 1
    with path.open("rb") as handle:
        start = 0
        while start < size:
            handle.seek(min(size, start + RANGE_BYTES))
            handle.readline()  # end at a line boundary
            end = min(size, handle.tell())
            units.append(("range", start, end, line))
            handle.seek(start)
            line += handle.read(end - start).count(b"\n")
            start = end
    return units


def _validated_blocks(path: Path, root: Path, check_images: bool, unit: tuple) -> Iterator[Any]:
    import pandas as pd

    checker = _ImageChecker(root.resolve(), 89_478_485) if check_images else None
    rows = []
    for ordinal, (line, raw, parsed) in enumerate(_unit_records(path, root, unit), start=1):
        position = ordinal if unit[0] == "array" else line  # as retrieval.ingest.iter_samples numbers them
        result = _validate(line, raw, parsed, set(), checker, fallback_id=fallback_id(path, position))  # duplicates: the driver's
        if isinstance(result, Accepted):
            rows.append({"line": line, "reason": "", "detail": "", "raw": _text(raw),  # the driver may find a duplicate
                         "record": json.dumps(result.sample.to_record()), "text": sample_text(result.sample)})
        else:
            rows.append({"line": line, "reason": result.reason, "detail": result.detail, "raw": result.raw,
                         "record": "", "text": ""})
        if len(rows) >= 1024:
            yield pd.DataFrame(rows)
            rows = []
    if rows:
        yield pd.DataFrame(rows)


def _unit_records(path: Path, root: Path, unit: tuple) -> Iterator[tuple[int, str, object]]:
    from tutorloop.retrieval.ingest import _NOT_PARSED

    if unit[0] == "table":
        _, kind, file, first = unit
        yield from iter_file_rows(kind, file, root, first=first)
    elif unit[0] == "array":
        yield from _iter_json_array(path)
    else:
        _, start, end, line = unit
        with path.open("rb") as handle:
            handle.seek(start)
            for number, data in enumerate(handle.read(end - start).split(b"\n"), start=line):
                text = data.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r")
                if not text.strip():
                    continue
                try:
                    yield number, text, json.loads(text)
                except json.JSONDecodeError:
                    yield number, text, _NOT_PARSED


class _Embedder:
    """One actor of the pool: the embedder, loaded once, and the fitted clusters."""

    def __init__(self, embedder_name: str, fit: Any, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)  # Ray pins an actor to one thread unless told otherwise
        self.model = load_embedder(embedder_name, device="cuda" if torch.cuda.is_available() else "cpu")
        self.fit = fit

    def __call__(self, frame: Any) -> Any:
        accepted = frame["reason"] == ""
        texts = frame.loc[accepted, "text"].tolist()
        vectors = embed_texts(self.model, texts, 64)
        labels = self.fit.assign(vectors) if len(texts) else np.zeros(0, dtype=int)
        frame = frame.copy()
        frame["vector"] = None
        frame["cluster"] = -1
        frame.loc[accepted, "vector"] = _object_series(list(vectors), frame.index[accepted])
        frame.loc[accepted, "cluster"] = labels
        return frame


def _object_series(values: list, index: Any) -> Any:
    """One vector per cell: pandas needs an object column to hold arrays."""
    import pandas as pd

    return pd.Series(values, index=index, dtype=object)
