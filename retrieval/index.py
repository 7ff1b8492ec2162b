"""The pool index: one Qdrant collection of instruction embeddings, with the full record in the payload.

``PoolIndex.open(store=DIR)`` is Qdrant's own engine embedded in the process (qdrant-edge:
retrieval/edge_index.py); ``PoolIndex.open(url=...)`` a Qdrant server or cluster through qdrant-client
(API key from ``QDRANT_API_KEY``). Both have the interface of this class. Point ids are UUIDv5 of the
sample id, so indexing the same pool twice leaves the same points. The manifest (pool, image root,
embedder, dim, clusters) travels with the collection (its metadata on a server, a file beside the
shard when embedded), so later stages load the same embedder and image root. ``index_pool``, the whole
``tutorloop index`` stage, is at the end of this module.

Near-duplicates found at index time (retrieval/semdedup.py) stay in the collection with ``dup_of: <kept
id>`` in their payload (a keyword payload index); queries and ``all_ids`` (the uniform draw) leave them
out with an ``is_empty`` condition on that field, so they are never retrieved.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from qdrant_client import QdrantClient, models

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

MANIFEST_KEY = "tutorloop"
# A fixed namespace so the same sample id maps to the same point id on every machine.
POINT_NAMESPACE = uuid.UUID("6f2b3c1e-5a7d-4e2b-9c1a-7d3e0f4b8a21")
_RETRIEVE_BATCH = 1000
DUP_OF = "dup_of"  # payload field of a near-duplicate: the id of the sample kept in its place


def point_id(sample_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, sample_id))


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
    version: int = 1


@dataclass
class Hit:
    sample_id: str
    score: float
    cluster: int | None
    vector: np.ndarray | None
    payload: dict


class PoolIndex:
    """A handle on one collection; open with ``PoolIndex.open(store=...)`` or ``PoolIndex.open(url=...)``."""

    def __init__(self, client: QdrantClient, collection: str = DEFAULT_COLLECTION, *, local: bool) -> None:
        self.client = client
        self.collection = collection
        self.local = local

    @classmethod
    def open(
        cls,
        *,
        store: Path | str | None = None,
        url: str | None = None,
        collection: str | None = DEFAULT_COLLECTION,
        api_key: str | None = None,
    ) -> PoolIndex:
        """The embedded store in ``store`` (qdrant-edge), or the server at ``url``."""
        collection = collection or DEFAULT_COLLECTION
        if (store is None) == (url is None):
            raise ValueError("give exactly one of store (embedded Qdrant folder) or url (Qdrant server)")
        if store is not None:
            from tutorloop.retrieval.edge_index import EdgeIndex

            return EdgeIndex(Path(store), collection)  # type: ignore[return-value]  (same interface)
        key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY") or None
        return cls(QdrantClient(url=url, api_key=key), collection, local=False)

    @classmethod
    def open_local_mode(cls, path: Path | str, collection: str = DEFAULT_COLLECTION) -> PoolIndex:
        """qdrant-client's pure-Python local mode, the embedded default before qdrant-edge. Kept only so
        benchmarks/store_scale.py can measure the two side by side; nothing else opens it."""
        Path(path).mkdir(parents=True, exist_ok=True)
        return cls(QdrantClient(path=str(path)), collection, local=True)

    # ------------------------------------------------------------------------------------------- reading

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    @property
    def manifest(self) -> IndexManifest:
        manifest = self.read_manifest()
        if manifest is None:
            raise LookupError(
                f"collection {self.collection!r} has no tutorloop manifest: build it with `tutorloop index`"
            )
        return manifest

    def read_manifest(self) -> IndexManifest | None:
        if not self.exists():
            return None
        metadata = self.client.get_collection(self.collection).config.metadata or {}
        stored = metadata.get(MANIFEST_KEY)
        return None if stored is None else IndexManifest.model_validate(stored)

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def query(
        self, vector: Sequence[float] | np.ndarray, limit: int, exclude_ids: Iterable[str] = frozenset(),
        *, with_vectors: bool = True, skills: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Top ``limit`` by cosine, never returning a sample in ``exclude_ids``; with ``skills``, only
        points whose payload ``skill`` (the skill map's, agents/skills.py) is one of them."""
        exclude = frozenset(exclude_ids)
        query = np.asarray(vector, dtype=np.float32).tolist()
        if self.local and skills is None and len(exclude) <= self.LOCAL_OVERFETCH_MAX:
            # Local mode scores every point either way but evaluates filters point by point in Python;
            # over-fetching by the size of the exclusion set (and of the marked duplicates) and dropping in
            # Python is cheaper.
            points = self._query(query, limit + len(exclude) + self._duplicates(), None, with_vectors)
            points = [p for p in points if (p.payload or {}).get("sample_id") not in exclude
                      and (p.payload or {}).get(DUP_OF) is None][:limit]
        else:
            points = self._query(query, limit, self._filter(exclude, skills), with_vectors)
        return [_hit(p) for p in points]

    def _duplicates(self) -> int:
        manifest = self.read_manifest()
        return manifest.duplicates if manifest is not None else 0

    @staticmethod
    def _filter(exclude: frozenset[str], skills: Sequence[str] | None) -> models.Filter | None:
        must = [models.FieldCondition(key="skill", match=models.MatchAny(any=list(skills)))] if skills else []
        must.append(NOT_DUPLICATE)  # near-duplicates marked at index time are never retrieved
        must_not = [models.HasIdCondition(has_id=[point_id(i) for i in exclude])] if exclude else []
        return models.Filter(must=must, must_not=must_not or None)

    def hybrid_query(self, arms: Sequence[Arm], limit: int, exclude_ids: Iterable[str] = frozenset()) -> list[FusedHit]:
        """The arms' dense searches fused by reciprocal rank on the server (query API: one prefetch per
        arm + RRF), best first. Which arm(s) found each point comes from the same searches as a batch."""
        from tutorloop.retrieval.fusion import SERVER_RRF_K

        exclude = frozenset(exclude_ids)
        if not arms:
            return []
        searches = [models.QueryRequest(query=np.asarray(a.vector, dtype=np.float32).tolist(), limit=limit,
                                        filter=self._filter(exclude, a.skills), with_payload=["sample_id"])
                    for a in arms]
        found = [[(p.payload or {}).get("sample_id") for p in response.points]
                 for response in self.client.query_batch_points(self.collection, requests=searches)]
        prefetch = [models.Prefetch(query=s.query, filter=s.filter, limit=limit) for s in searches]
        fused = self.client.query_points(
            self.collection, prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=SERVER_RRF_K)),
            limit=limit, with_payload=True, with_vectors=True).points
        return [_fused(_hit(p), arms, found) for p in fused]

    LOCAL_OVERFETCH_MAX = 5000

    def _query(self, query: list[float], limit: int, flt: models.Filter | None, with_vectors: bool) -> list:
        return self.client.query_points(
            self.collection, query=query, limit=limit, query_filter=flt, with_payload=True, with_vectors=with_vectors
        ).points

    def fetch(self, ids: Sequence[str]) -> list[Sample]:
        """The samples of ``ids``, in that order, rebuilt from the stored records."""
        found: dict[str, Sample] = {}
        for start in range(0, len(ids), _RETRIEVE_BATCH):
            batch = [point_id(i) for i in ids[start : start + _RETRIEVE_BATCH]]
            for point in self.client.retrieve(self.collection, ids=batch, with_payload=["record"]):
                sample = Sample.model_validate(point.payload["record"])
                found[sample.id] = sample
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in collection {self.collection!r}: {missing[:5]}")
        return [found[i] for i in ids]

    def all_ids(self) -> list[str]:
        """Every retrievable sample id (marked near-duplicates left out), sorted."""
        flt = models.Filter(must=[NOT_DUPLICATE])
        return sorted(point.payload["sample_id"] for point in self._scroll(["sample_id"], flt))

    def cluster_vectors(self, cluster: int) -> tuple[list[str], np.ndarray]:
        """The ids and stored vectors of one cluster's points (for de-duplication at index time)."""
        flt = models.Filter(must=[models.FieldCondition(key="cluster", match=models.MatchValue(value=cluster))])
        ids, vectors = [], []
        for point in self._scroll(["sample_id"], flt, with_vectors=True):
            ids.append(point.payload["sample_id"])
            vectors.append(point.vector)
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1 if ids else 0)  # an empty cluster: (0, 0)

    def payloads(self, fields: list[str]) -> Iterable[dict]:
        """Those payload fields of every point, streamed."""
        return (point.payload for point in self._scroll(fields))

    def vectors(self, batch: int = _RETRIEVE_BATCH) -> Iterable[tuple[list[str], np.ndarray]]:
        """(sample ids, their vectors) of every point, streamed in batches (the skill map clusters them)."""
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=batch, offset=offset,
                                                with_payload=["sample_id"], with_vectors=True)
            if points:
                yield ([p.payload["sample_id"] for p in points],
                       np.asarray([p.vector for p in points], dtype=np.float32))
            if offset is None:
                return

    def set_payload(self, sample_ids: Sequence[str], payload: dict) -> None:
        """Set ``payload`` fields on the points of ``sample_ids`` (other fields stay)."""
        for start in range(0, len(sample_ids), _RETRIEVE_BATCH):
            batch = [point_id(i) for i in sample_ids[start : start + _RETRIEVE_BATCH]]
            self.client.set_payload(self.collection, payload=payload, points=batch, wait=True)

    def set_payload_where(self, key: str, values: Sequence[int | str], payload: dict) -> None:
        """Set ``payload`` fields on every point whose field ``key`` is one of ``values``."""
        flt = models.Filter(must=[models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))])
        self.client.set_payload(self.collection, payload=payload, points=flt, wait=True)

    def count_with(self, key: str) -> int:
        """Points whose payload has a non-empty ``key``."""
        flt = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
        return self.client.count(self.collection, count_filter=flt, exact=True).count

    def _scroll(self, fields: list[str], flt: models.Filter | None = None, *, with_vectors: bool = False
                ) -> Iterable[Any]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, scroll_filter=flt, limit=_RETRIEVE_BATCH, offset=offset,
                with_payload=fields, with_vectors=with_vectors,
            )
            yield from points
            if offset is None:
                return

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------------------- writing

    def prepare(self, dim: int, embedder: str) -> bool:
        """Create the collection, or recreate it when it was built with another embedder or dim.
        True when existing points were kept (re-index in place)."""
        kept = False
        if self.exists():
            old = self.read_manifest()
            kept = self._stored_dim() == dim and (old is None or old.embedder == embedder)
            if not kept:
                self.client.delete_collection(self.collection)
        if not kept:
            self.client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
            if not self.local:  # the fields the loop filters on (local mode has no payload indexes)
                for name, kind in (("sample_id", "KEYWORD"), ("run", "KEYWORD"), ("source", "KEYWORD"),
                                   ("skill", "KEYWORD"), ("cluster", "INTEGER"),
                                   ("skill_cluster", "INTEGER"), (DUP_OF, "KEYWORD")):
                    self.client.create_payload_index(self.collection, name, getattr(models.PayloadSchemaType, kind))
        self._fast_local_writes()
        return kept

    def _fast_local_writes(self) -> None:
        """Local mode commits every point to SQLite separately, each with an fsync: 50-1,000 points/s
        depending on the disk's load. WAL + synchronous=NORMAL makes those commits cheap (measured 46 ->
        5,300 points/s on a busy disk) and never corrupts the file; a power loss may drop the last commits,
        which a re-run of the (idempotent) index restores. Reaches into qdrant-client internals, so any
        change there only costs speed: nothing is done when the attributes are not found."""
        if not self.local:
            return
        collection = getattr(getattr(self.client, "_client", None), "collections", {}).get(self.collection)
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if connection is None or not hasattr(connection, "execute"):
            return
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except Exception:  # noqa: BLE001 - a pragma that does not apply only costs speed
            return

    def _stored_dim(self) -> int | None:
        vectors = self.client.get_collection(self.collection).config.params.vectors
        return getattr(vectors, "size", None)

    def upsert(self, samples: Sequence[Sample], vectors: np.ndarray, clusters: Sequence[int], run: str) -> None:
        points = [
            models.PointStruct(id=point_id(s.id), vector=v.tolist(), payload=_payload(s, int(c), run))
            for s, v, c in zip(samples, vectors, clusters, strict=True)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def delete_stale(self, run: str) -> int:
        """Drop points of earlier runs that this run did not write (records gone from the pool)."""
        stale = models.Filter(must_not=[models.FieldCondition(key="run", match=models.MatchValue(value=run))])
        n = self.client.count(self.collection, count_filter=stale, exact=True).count
        if n:
            self.client.delete(self.collection, points_selector=models.FilterSelector(filter=stale), wait=True)
        return n

    def mark_duplicates(self, dup_of: dict[str, str]) -> None:
        """Set ``dup_of`` on each marked point (one payload operation per kept sample, sent in batches)."""
        if not self.local:  # a collection made before de-duplication existed has no index on the field yet
            self.client.create_payload_index(self.collection, DUP_OF, models.PayloadSchemaType.KEYWORD)
        operations = [models.SetPayloadOperation(set_payload=models.SetPayload(
            payload={DUP_OF: kept}, points=[point_id(i) for i in marked]))
            for kept, marked in group_by_kept(dup_of).items()]
        for start in range(0, len(operations), _RETRIEVE_BATCH):
            self.client.batch_update_points(self.collection, operations[start : start + _RETRIEVE_BATCH], wait=True)

    def write_manifest(self, manifest: IndexManifest) -> None:
        self.client.update_collection(self.collection, metadata={MANIFEST_KEY: manifest.model_dump(mode="json")})


NOT_DUPLICATE = models.IsEmptyCondition(is_empty=models.PayloadField(key=DUP_OF))


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
T = TypeVar("T")


def without_excluded(search: Callable[[int, frozenset[str]], list[T]], limit: int, exclude: frozenset[str], *,
                     key: Callable[[T], str]) -> list[T]:
    """The top ``limit`` of ``search(k, ids_filtered_out)`` that are not in ``exclude``.

    First without the id filter, over-fetching and dropping the excluded hits: a filter of 10k ids made a
    100k-point HNSW query 12x slower than none and lowered its recall (benchmarks/store_scale.py). When the
    over-fetch still leaves fewer than ``limit`` (the excluded crowd the query's neighbourhood, as a later
    round's queries for the same gap do), the search runs again with the filter."""
    if not exclude:
        return search(limit, exclude)
    wanted = OVERFETCH * limit + OVERFETCH_SLACK
    hits = search(wanted, frozenset())
    kept = [h for h in hits if key(h) not in exclude]
    if len(kept) >= limit or len(hits) < wanted:  # enough left, or the collection has no more to give
        return kept[:limit]
    return search(limit, exclude)


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


def _fused(hit: Hit, arms: Sequence[Arm], found: Sequence[Sequence[str]]) -> FusedHit:
    names = tuple(dict.fromkeys(a.name for a, ids in zip(arms, found, strict=True) if hit.sample_id in ids))
    return FusedHit(hit.sample_id, hit.score, hit.cluster, hit.vector, hit.payload, arms=names)


def _hit(point: Any) -> Hit:
    payload = point.payload or {}
    vector = None if point.vector is None else np.asarray(point.vector, dtype=np.float32)
    return Hit(payload.get("sample_id", ""), float(point.score), payload.get("cluster"), vector, payload)


# ================================================================================ the `index` stage


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
        semdedup_threshold=semdedup_threshold,
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
    """Local mode's SQLite connection may only leave its thread where SQLite is built thread-safe."""
    if not getattr(index, "local", False):
        return True
    from qdrant_client.local.persistence import CollectionPersistence

    return CollectionPersistence.CHECK_SAME_THREAD is False


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="indexing", unit="rec", disable=not enabled, smoothing=0.1)

