"""The pool index: one Qdrant collection of instruction embeddings, with the full record in the payload.

``PoolIndex.open(store=DIR)`` is Qdrant's own engine embedded in the process (qdrant-edge:
retrieval/edge_index.py); ``PoolIndex.open(url=...)`` a Qdrant server or cluster through qdrant-client
(retrieval/server_index.py, API key from ``QDRANT_API_KEY``). Both implement `PoolIndex`, the interface
declared here. Point ids are UUIDv5 of the
sample id, so indexing the same pool twice leaves the same points. The manifest (pool, image root,
embedder, dim, clusters) travels with the collection (its metadata on a server, a file beside the
shard when embedded), so later stages load the same embedder and image root. ``index_pool``, the whole
``tutorloop index`` stage, is at the end of this module.

Near-duplicates found at index time (retrieval/semdedup.py) stay in the collection with ``dup_of: <kept
id>`` in their payload (a keyword payload index); queries and ``all_ids`` (the uniform draw) leave them
out with an ``is_empty`` condition on that field, so they are never retrieved.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from tutorloop.retrieval.clusters import ClusterFit, ClusterSpec, fit_clusters
from tutorloop.retrieval.defaults import DEFAULT_COLLECTION
from tutorloop.retrieval.embed import embed_texts, embedding_dim, sample_text
from tutorloop.retrieval.ingest import (
    Accepted,
    IngestTally,
    iter_samples,
    no_valid_record,
    optional_quarantine,
)
from tutorloop.retrieval.records import Sample

log = logging.getLogger(__name__)
MANIFEST_KEY = "tutorloop"
# A fixed namespace so the same sample id maps to the same point id on every machine.
POINT_NAMESPACE = uuid.UUID("6f2b3c1e-5a7d-4e2b-9c1a-7d3e0f4b8a21")
_RETRIEVE_BATCH = 1000
DUP_OF = "dup_of"  # payload field of a near-duplicate: the id of the sample kept in its place


def point_id(sample_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, sample_id))


class HnswSettings(BaseModel):
    """The HNSW graph of a pool index: edges per node (``m``) and candidates while building (``ef_construct``)
    set how good the graph is; ``ef``, the candidates a search keeps, trades latency for recall at query time.
    The defaults come from the recall-latency curve of ``benchmarks/store_scale.py`` at 1M points: ef 128 found
    0.93 of the exact top 50, 256 found 0.98 at a median 3.9 ms, 512 found 0.998 at 4.9 ms (docs/results.md)."""

    m: int = Field(16, gt=0)
    ef_construct: int = Field(100, gt=0)
    ef: int = Field(256, gt=0)


DEFAULT_HNSW = HnswSettings()


def search_ef(manifest: IndexManifest | None) -> int:
    """The search-time ef an index was built to be searched with (the default where it recorded none)."""
    return (manifest.hnsw if manifest is not None and manifest.hnsw is not None else DEFAULT_HNSW).ef


class IndexManifest(BaseModel):
    """What a later stage needs to use the index the way it was built."""

    pool: str
    image_root: str
    embedder: str
    dim: int
    text: str = "instruction"  # what was embedded: human turns without <image> tags
    clusters: int
    silhouette: float | None = None
    count: int
    duplicates: int = 0  # points marked dup_of (never retrieved); included in count
    semdedup_threshold: float | None = None  # None: no de-duplication ran
    hnsw: HnswSettings | None = None  # None: a store that did not record them (searched with DEFAULT_HNSW's ef)
    version: int = 1


@dataclass
class Hit:
    sample_id: str
    score: float
    cluster: int | None
    vector: np.ndarray | None
    payload: dict


class PoolIndex(Protocol):
    """What every stage asks of a pool's index, whichever engine holds it: the embedded store
    (retrieval/edge_index.py: ``EdgeIndex``) or a Qdrant server (retrieval/server_index.py: ``ServerIndex``).
    ``PoolIndex.open`` opens the one a config names."""

    collection: str

    @staticmethod
    def open(*, store: Path | str | None = None, url: str | None = None, collection: str | None = DEFAULT_COLLECTION,
             api_key: str | None = None) -> PoolIndex:
        """The embedded store in ``store`` (qdrant-edge), or the server at ``url`` (API key: ``api_key``, else
        ``QDRANT_API_KEY``)."""
        collection = collection or DEFAULT_COLLECTION
        if (store is None) == (url is None):
            raise ValueError("give exactly one of store (embedded Qdrant folder) or url (Qdrant server)")
        if store is not None:
            from tutorloop.retrieval.edge_index import EdgeIndex

            return EdgeIndex(Path(store), collection)
        from tutorloop.retrieval.server_index import ServerIndex

        return ServerIndex.connect(url, collection, api_key)

    @staticmethod
    def open_when_free(wait_s: float, **where: Any) -> PoolIndex:
        """``PoolIndex.open(**where)``, waiting up to ``wait_s`` (said once in the log) while another process
        holds the embedded store: the engine admits one at a time, and a run holds it only while it reads."""
        from tutorloop.retrieval.edge_index import StoreInUse

        waited_since = None
        while True:
            try:
                return PoolIndex.open(**where)
            except StoreInUse as error:
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.warning("%s; waiting up to %.0f s for it", error, wait_s)
                if time.monotonic() - waited_since > wait_s:
                    raise LookupError(f"store {where.get('store')} stayed in use by another process for "
                                      f"{wait_s:.0f} s; try again when it is free") from None
                time.sleep(0.5)

    # reading
    def exists(self) -> bool: ...
    @property
    def manifest(self) -> IndexManifest: ...
    def read_manifest(self) -> IndexManifest | None: ...
    def count(self) -> int: ...
    def query(self, vector: Sequence[float] | np.ndarray, limit: int, exclude_ids: Iterable[str] = frozenset(), *,
              with_vectors: bool = True, skills: Sequence[str] | None = None) -> list[Hit]: ...
    def hybrid_query(self, arms: Sequence[Arm], limit: int, exclude_ids: Iterable[str] = frozenset()
                     ) -> list[FusedHit]: ...
    def fetch(self, ids: Sequence[str]) -> list[Sample]: ...
    def all_ids(self) -> list[str]: ...
    def cluster_vectors(self, cluster: int) -> tuple[list[str], np.ndarray]: ...
    def payloads(self, fields: list[str]) -> Iterable[dict]: ...
    def vectors(self, batch: int = _RETRIEVE_BATCH) -> Iterable[tuple[list[str], np.ndarray]]: ...
    def count_with(self, key: str) -> int: ...
    def close(self) -> None: ...

    # writing
    def prepare(self, dim: int, embedder: str) -> bool: ...
    def upsert(self, samples: Sequence[Sample], vectors: np.ndarray, clusters: Sequence[int], run: str) -> None: ...
    def delete_stale(self, run: str) -> int: ...
    def mark_duplicates(self, dup_of: dict[str, str]) -> None: ...
    def set_payload(self, sample_ids: Sequence[str], payload: dict) -> None: ...
    def set_payload_where(self, key: str, values: Sequence[int | str], payload: dict) -> None: ...
    def write_manifest(self, manifest: IndexManifest) -> None: ...


def group_by_kept(dup_of: dict[str, str]) -> dict[str, list[str]]:
    """kept id -> its marked duplicates, both sorted (one payload write per kept sample)."""
    groups: dict[str, list[str]] = {}
    for marked, kept in sorted(dup_of.items()):
        groups.setdefault(kept, []).append(marked)
    return dict(sorted(groups.items()))


def _payload(sample: Sample, cluster: int, run: str) -> dict:
    return {
        "sample_id": sample.id,
        "source": sample.source,
        "image": sample.images[0] if sample.images else None,
        "images": sample.images,
        "format": sample.form,
        "instruction": sample.instruction_text,
        "cluster": cluster,
        "run": run,
        "record": sample.to_record(),
    }


OVERFETCH = 2  # an over-fetched search asks for OVERFETCH * limit + OVERFETCH_SLACK hits
OVERFETCH_SLACK = 32
TIE_SLACK = 32  # hits past the limit every search fetches, so that equal scores at the cut are ordered here
MAX_FETCH = 4096  # a run of equal scores longer than this is cut where the engine cuts it
T = TypeVar("T")


def tie_key(sample_id: str) -> bytes:
    """Where a hit goes among hits of equal score: a hash of its id — the same on every run and machine, and
    unrelated to the pool's file order (a templated pool repeats one instruction, so one vector, many times)."""
    return hashlib.blake2b(sample_id.encode(), digest_size=8).digest()


def without_excluded(search: Callable[[int, frozenset[str]], list[T]], limit: int, exclude: frozenset[str], *,
                     key: Callable[[T], str], score: Callable[[T], float]) -> list[T]:
    """The top ``limit`` of ``search(k, ids_filtered_out)`` that are not in ``exclude``.

    First without the id filter, over-fetching and dropping the excluded hits: a filter of 10k ids made a
    100k-point HNSW query 12x slower than none and lowered its recall (benchmarks/store_scale.py). When the
    over-fetch still leaves fewer than ``limit`` (the excluded crowd the query's neighbourhood, as a later
    round's queries for the same gap do), the search runs again with the filter.

    Hits of equal score are ordered by ``tie_key`` before the cut, not as the engine stored them: the order of
    storage follows the writes' timing, so two indexes of one pool would return different samples among equals
    (and one seed would select differently from each). A fetch whose last hit still ties the cut is asked again
    twice as long, so the whole run of equals is seen (up to ``MAX_FETCH`` hits)."""

    def past_ties(k: int, ids: frozenset[str]) -> tuple[list[T], list[T]]:
        """(what the search returned, those not excluded), fetched until the cut is no longer in a tie."""
        while True:
            hits = search(k, ids)
            kept = [h for h in hits if key(h) not in exclude]
            if len(hits) < k or k >= MAX_FETCH or len(kept) < limit or score(hits[-1]) < score(kept[limit - 1]):
                return hits, kept
            k *= 2

    def ranked(hits: list[T]) -> list[T]:
        return sorted(hits, key=lambda h: (-score(h), tie_key(key(h))))[:limit]

    wanted = OVERFETCH * limit + OVERFETCH_SLACK if exclude else limit + TIE_SLACK
    hits, kept = past_ties(wanted, frozenset())
    if len(kept) >= limit or len(hits) < wanted:  # enough left, or the collection has no more to give
        return ranked(kept)
    return ranked(past_ties(limit + TIE_SLACK, exclude)[1])


@dataclass(frozen=True)
class Arm:
    """One dense search of a hybrid query: its name (recorded on what it finds), vector, skill filter."""

    name: str
    vector: Sequence[float] | np.ndarray
    skills: tuple[str, ...] | None = None


@dataclass
class FusedHit(Hit):
    """A hit of a hybrid query: ``score`` is the fused (RRF) score; ``arms`` the arms that found it."""

    arms: tuple[str, ...] = ()


@dataclass
class IndexReport:
    pool: str
    collection: str
    counts: dict  # IngestTally.as_dict(): read, accepted, rejected, by_reason
    k: int
    silhouette: float | None
    silhouette_grid: dict[int, float]
    points: int
    stale_deleted: int
    seconds: dict[str, float] = field(default_factory=dict)
    quarantine: str | None = None
    dedup: dict | None = None  # DedupSummary.as_dict() (retrieval/semdedup.py); None: de-duplication off

    @property
    def duplicates(self) -> int:
        return self.dedup["marked"] if self.dedup else 0

    @property
    def samples_per_second(self) -> float:
        total = self.seconds.get("total", 0.0)
        return self.counts["accepted"] / total if total > 0 else 0.0


@dataclass
class _Clock:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


def index_pool(
    pool_path: Path | str,
    *,
    index: PoolIndex,
    embedder: Any,
    embedder_name: str,
    image_root: Path | str | None = None,
    clusters: ClusterSpec = "auto",
    batch_size: int = 1024,
    encode_batch_size: int = 64,
    cluster_sample: int = 4096,
    quarantine_path: Path | str | None = None,
    check_images: bool = True,
    seed: int = 0,
    progress: bool = True,
    semdedup_threshold: float | None = None,
) -> IndexReport:
    """Read + validate -> embed -> cluster -> upsert, streaming: memory is bounded by the batch and the
    clustering sample, not by the pool.

    Clusters are fitted first on a seeded uniform sample of the pool (one cheap pass of parsing without
    image checks); the sample's vectors are reused, so no text is embedded twice. Each point is then
    written once with its cluster id, and writes overlap with the next batch's embedding in a worker
    thread (local mode spends most of an upsert waiting for SQLite commits).

    ``semdedup_threshold`` (None: off, here; `tutorloop index` turns it on through IndexConfig) marks
    near-duplicates within clusters after every point is written (retrieval/semdedup.py).
    """
    from tutorloop.retrieval.ingest import default_image_root
    from tutorloop.retrieval.tables import is_table

    pool_path = Path(pool_path)
    if not pool_path.is_file() and not is_table(pool_path):  # a folder of tables is a pool too
        raise FileNotFoundError(f"pool file not found: {pool_path}")
    root = Path(image_root).resolve() if image_root is not None else default_image_root(pool_path)
    clock, start = _Clock(), time.perf_counter()

    t = time.perf_counter()
    sample_lines, sample_texts, n_records = _reservoir(pool_path, root, cluster_sample, seed)
    t = clock.add("sample", t)
    sample_vectors = embed_texts(embedder, sample_texts, encode_batch_size, progress=False)
    t = clock.add("embed", t)
    fit = fit_clusters(sample_vectors, clusters, seed=seed)
    cached = dict(zip(sample_lines, sample_vectors, strict=True))
    del sample_texts, sample_vectors
    t = clock.add("cluster", t)
    if not sample_lines:  # checked before the index is touched: a wrong file must not wipe an index
        raise no_valid_record(Path(pool_path), root, Path(quarantine_path) if quarantine_path else None)

    dim = embedding_dim(embedder)
    kept = index.prepare(dim, embedder_name)
    run = uuid.uuid4().hex
    tally = IngestTally()
    quarantine = Path(quarantine_path) if quarantine_path is not None else None
    writer = _UpsertWriter(index, run, clock)
    clock.add("prepare", t)
    with optional_quarantine(quarantine, pool_path) as sink, _progress(n_records, progress) as bar:
        batch: list[Accepted] = []
        t = time.perf_counter()
        for result in iter_samples(pool_path, root, check_images=check_images):
            tally.add(result)
            bar.update(1)
            if isinstance(result, Accepted):
                batch.append(result)
            elif sink is not None:
                sink.write(result)
            if len(batch) >= batch_size:
                t = clock.add("read_validate", t)
                _flush(batch, embedder, encode_batch_size, fit, cached, writer, clock)
                batch, t = [], time.perf_counter()
        t = clock.add("read_validate", t)
        if batch:
            _flush(batch, embedder, encode_batch_size, fit, cached, writer, clock)
        writer.close()

    return finalize(index, pool_path, root, embedder_name, dim, fit, tally, run, kept=kept, quarantine=quarantine,
                    clock=clock, start=start, semdedup_threshold=semdedup_threshold)


def finalize(index: PoolIndex, pool_path: Path, root: Path, embedder_name: str, dim: int, fit: ClusterFit,
             tally: IngestTally, run: str, *, kept: bool, quarantine: Path | None, clock: _Clock,
             start: float, semdedup_threshold: float | None = None) -> IndexReport:
    """After every batch is written: drop stale points, mark near-duplicates, write the manifest, report
    (shared with Ray's path, so both mark the same duplicates)."""
    from tutorloop.retrieval.semdedup import dedup_store

    t = time.perf_counter()
    if tally.accepted == 0:
        raise ValueError(f"{pool_path}: every record was rejected (see the quarantine); stale points were kept")
    stale = index.delete_stale(run) if kept else 0
    t = clock.add("finalize", t)
    # every point left was (re)written by this run, and an upsert replaces the payload: no earlier marks remain
    dedup = dedup_store(index, root, fit.k, semdedup_threshold) if semdedup_threshold is not None else None
    if dedup is not None:
        t = clock.add("semdedup", t)
    points = index.count()
    index.write_manifest(IndexManifest(
        pool=str(pool_path.resolve()), image_root=str(root), embedder=embedder_name, dim=dim,
        clusters=fit.k, silhouette=fit.silhouette, count=points, duplicates=dedup.marked if dedup else 0,
        semdedup_threshold=semdedup_threshold, hnsw=DEFAULT_HNSW,
    ))
    clock.add("finalize", t)
    clock.seconds["total"] = time.perf_counter() - start
    return IndexReport(
        pool=str(pool_path), collection=index.collection, counts=tally.as_dict(), k=fit.k,
        silhouette=fit.silhouette, silhouette_grid=fit.grid, points=points, stale_deleted=stale,
        seconds={k: round(v, 3) for k, v in clock.seconds.items()},
        quarantine=str(quarantine) if quarantine is not None else None,
        dedup=dedup.as_dict() if dedup else None,
    )


def _reservoir(pool_path: Path, root: Path, size: int, seed: int) -> tuple[list[int], list[str], int]:
    """A seeded uniform sample (Algorithm R) of the valid records' lines and texts, and the record count."""
    rng = random.Random(seed)
    lines: list[int] = []
    texts: list[str] = []
    seen = n_records = 0
    for result in iter_samples(pool_path, root, check_images=False):
        n_records += 1
        if not isinstance(result, Accepted):
            continue
        seen += 1
        slot = seen - 1 if seen <= size else rng.randrange(seen)
        if slot < size:
            text = sample_text(result.sample)
            if slot == len(lines):
                lines.append(result.line)
                texts.append(text)
            else:
                lines[slot], texts[slot] = result.line, text
    return lines, texts, n_records


def _flush(
    batch: list[Accepted], embedder: Any, encode_batch_size: int, fit: ClusterFit,
    cached: dict[int, np.ndarray], writer: _UpsertWriter, clock: _Clock,
) -> None:
    t = time.perf_counter()
    todo = [i for i, a in enumerate(batch) if a.line not in cached]
    fresh = embed_texts(embedder, [sample_text(batch[i].sample) for i in todo], encode_batch_size)
    vectors = np.empty((len(batch), fresh.shape[1]), dtype=np.float32)
    vectors[todo] = fresh
    for i, accepted in enumerate(batch):
        if accepted.line in cached:
            vectors[i] = cached.pop(accepted.line)
    t = clock.add("embed", t)
    labels = fit.assign(vectors)
    clock.add("cluster", t)
    writer.submit([a.sample for a in batch], vectors, labels)


class _UpsertWriter:
    """Upserts in one worker thread, at most one batch in flight besides the one being embedded, so
    memory stays flat and the SQLite commits of local mode overlap with the next batch's encoding."""

    def __init__(self, index: PoolIndex, run: str, clock: _Clock) -> None:
        self.index, self.run, self.clock = index, run, clock
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upsert") if _threads_ok(index) else None
        self.pending: Future | None = None
        self.worker_seconds = 0.0

    def submit(self, samples: list[Sample], vectors: np.ndarray, labels: np.ndarray) -> None:
        self._wait()
        if self.pool is None:
            t = time.perf_counter()
            self._write(samples, vectors, labels)
            self.clock.add("upsert_wait", t)
        else:
            self.pending = self.pool.submit(self._write, samples, vectors, labels)

    def _write(self, samples: list[Sample], vectors: np.ndarray, labels: np.ndarray) -> None:
        t = time.perf_counter()
        self.index.upsert(samples, vectors, labels, self.run)
        self.worker_seconds += time.perf_counter() - t

    def _wait(self) -> None:
        if self.pending is not None:
            t = time.perf_counter()
            self.pending.result()  # re-raises a failed write here, in the caller's thread
            self.pending = None
            self.clock.add("upsert_wait", t)

    def close(self) -> None:
        try:
            self._wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            self.clock.seconds["upsert_worker"] = self.worker_seconds


def _threads_ok(index: PoolIndex) -> bool:
    """Whether upserts may run on a worker thread (an engine says otherwise with ``thread_safe = False``)."""
    return getattr(index, "thread_safe", True)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="indexing", unit="rec", disable=not enabled, smoothing=0.1)

