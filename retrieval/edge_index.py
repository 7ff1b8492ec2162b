"""The embedded pool index: Qdrant's own engine in-process (qdrant-edge), one shard per collection.

Unlike qdrant-client's local mode (brute force over points pickled in one SQLite file, all in RAM), the
edge shard keeps segments on disk with a write-ahead log, payload indexes and an HNSW graph built by
``optimize()``. Its interface is `PoolIndex`'s (retrieval/index.py), so `tutorloop run` cannot tell them
apart. Layout inside the store folder::

    STORE/<collection>/                 the shard (segments, WAL)
    STORE/<collection>.manifest.json    IndexManifest: pool, image root, embedder, dim, clusters

Search is exact (brute force in Rust) while a shard holds at most ``EXACT_BELOW`` points — it is
milliseconds there and gives the same neighbours as any exact search — and HNSW above that.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.retrieval.defaults import DEFAULT_COLLECTION
from tutorloop.retrieval.files import atomic_write_text, read_json, write_json
from tutorloop.retrieval.index import (
    _RETRIEVE_BATCH,
    DEFAULT_HNSW,
    DUP_OF,
    Arm,
    FusedHit,
    Hit,
    IndexManifest,
    _payload,
    group_by_kept,
    point_id,
    search_ef,
    without_excluded,
)
from tutorloop.retrieval.records import Sample

EXACT_BELOW = 20_000
PAYLOAD_INDEXES = {"sample_id": "Keyword", "run": "Keyword", "source": "Keyword", "skill": "Keyword",
                   "cluster": "Integer", "skill_cluster": "Integer", DUP_OF: "Keyword"}
LEGACY_MARKERS = ("meta.json", "collection")  # what qdrant-client's local mode leaves in a folder


class LegacyStoreError(ValueError):
    """The folder holds a store of qdrant-client's local mode, which tutorloop no longer writes."""


class StoreInUse(RuntimeError):
    """Another process holds the embedded store (the engine admits one at a time)."""


HOLDER = "holder.json"  # who holds the store now: pid, command, since (removed on close)


def _held(error: Exception) -> bool:
    text = str(error)
    return "WouldBlock" in text or "Resource temporarily unavailable" in text


def is_legacy_store(store: Path) -> bool:
    return all((Path(store) / name).exists() for name in LEGACY_MARKERS)


class EdgeIndex:
    """A handle on one collection of an embedded store; open with ``PoolIndex.open(store=...)``."""

    thread_safe = True  # the shard may be written from the upsert worker thread

    def __init__(self, store: Path, collection: str = DEFAULT_COLLECTION) -> None:
        import qdrant_edge as edge

        self.edge = edge
        self.store = Path(store)
        self.collection = collection
        self._hnsw_ef: int | None = None  # read from the manifest at the first search
        if is_legacy_store(self.store):
            raise LegacyStoreError(
                f"{self.store} holds an index written by an older tutorloop (qdrant-client local mode); "
                f"this version uses Qdrant's embedded engine: re-run `tutorloop index --store {self.store}` "
                "into a new folder (or delete this one first)")
        self.store.mkdir(parents=True, exist_ok=True)
        try:
            self.shard = edge.EdgeShard.load(str(self.shard_path)) if self.exists() else None
        except Exception as error:  # the engine reports a held lock as a generic runtime error
            if not _held(error):
                raise
            raise StoreInUse(f"store {self.store} is in use by {self._holder()}; wait for it to finish (a run holds "
                             "it only while it reads the pool)") from None
        write_json(self.store / HOLDER, {"pid": os.getpid(), "command": " ".join(sys.argv)[:300],
                                          "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self._count: int | None = None

    @property
    def shard_path(self) -> Path:
        return self.store / self.collection

    @property
    def manifest_path(self) -> Path:
        return self.store / f"{self.collection}.manifest.json"

    # ------------------------------------------------------------------------------------------- reading

    def exists(self) -> bool:
        return self.shard_path.is_dir() and any(self.shard_path.iterdir())

    @property
    def manifest(self) -> IndexManifest:
        manifest = self.read_manifest()
        if manifest is None:
            raise LookupError(f"{self.store}: collection {self.collection!r} has no tutorloop manifest: build it "
                              "with `tutorloop index`")
        return manifest

    def read_manifest(self) -> IndexManifest | None:
        if not self.manifest_path.exists():
            return None
        return IndexManifest.model_validate(read_json(self.manifest_path))

    def count(self) -> int:
        if self.shard is None:
            return 0
        if self._count is None:  # asked before every query (exact or HNSW): counted once per write
            self._count = self.shard.count(self.edge.CountRequest(exact=True))
        return self._count

    def query(self, vector: Sequence[float] | np.ndarray, limit: int, exclude_ids: Iterable[str] = frozenset(),
              *, with_vectors: bool = True, skills: Sequence[str] | None = None) -> list[Hit]:
        """Top ``limit`` by cosine, never returning a sample in ``exclude_ids`` nor a near-duplicate marked at
        index time (``dup_of`` set); with ``skills``, only points whose payload ``skill`` is one of them (the
        skill map's). The trained ids are dropped from an over-fetched search rather than filtered in it
        (``without_excluded``): an id filter of thousands costs the search more than a longer list does."""
        exclude = frozenset(exclude_ids)
        skills_key = tuple(skills) if skills else None

        def search(k: int, ids: frozenset[str]) -> list[Hit]:
            return self._search(vector, k, self._filter(ids, skills_key), with_vectors)

        return without_excluded(search, limit, exclude, key=lambda hit: hit.sample_id, score=lambda hit: hit.score)

    @property
    def hnsw_ef(self) -> int:
        if self._hnsw_ef is None:
            self._hnsw_ef = search_ef(self.read_manifest())
        return self._hnsw_ef

    def _search(self, vector: Sequence[float] | np.ndarray, limit: int, flt: Any, with_vectors: bool) -> list[Hit]:
        edge = self.edge
        exact = self.count() <= EXACT_BELOW
        request = edge.QueryRequest(
            limit=limit, query=edge.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()), filter=flt,
            with_payload=True, with_vector=with_vectors,
            params=edge.SearchParams(exact=exact, hnsw_ef=None if exact else max(self.hnsw_ef, limit)))
        return [Hit(p.payload.get("sample_id", ""), float(p.score), p.payload.get("cluster"),
                    None if p.vector is None else np.asarray(p.vector, dtype=np.float32), p.payload)
                for p in self.shard.query(request)]

    def hybrid_query(self, arms: Sequence[Arm], limit: int, exclude_ids: Iterable[str] = frozenset()) -> list[FusedHit]:
        """The arms' dense searches fused by reciprocal rank (retrieval/fusion.py, the same scores a Qdrant
        server's prefetch + RRF gives), best first; each hit records the arm(s) that found it."""
        from tutorloop.retrieval.fusion import rrf

        results = [self.query(a.vector, limit, exclude_ids, skills=a.skills) for a in arms]
        first: dict[str, Hit] = {}
        for hits in results:
            for hit in hits:
                first.setdefault(hit.sample_id, hit)
        fused = rrf([[h.sample_id for h in hits] for hits in results], limit=limit)
        return [FusedHit(f.key, f.score, first[f.key].cluster, first[f.key].vector, first[f.key].payload,
                         arms=tuple(dict.fromkeys(arms[i].name for i in f.ranks))) for f in fused]

    def _filter(self, exclude: frozenset[str], skills: tuple[str, ...] | None) -> Any:
        """The filter leaving out ``exclude`` and the marked near-duplicates, keeping only ``skills``; a
        round asks many queries with one set: each filter is built once (10k ids take ~12-25 ms to
        convert, more than the query itself)."""
        key = (exclude, skills)
        if getattr(self, "_filters", (None,))[0] != key:
            edge = self.edge
            if getattr(self, "_excluded", (None,))[0] != exclude:
                self._excluded = (exclude, edge.HasIdCondition({point_id(i) for i in exclude}) if exclude else None)
            must = [edge.FieldCondition(key="skill", match=edge.MatchAny(list(skills)))] if skills else []
            must.append(edge.IsEmptyCondition(DUP_OF))
            not_these = self._excluded[1]
            self._filters = (key, edge.Filter(must=must, must_not=[not_these] if not_these is not None else None))
        return self._filters[1]

    def fetch(self, ids: Sequence[str]) -> list[Sample]:
        """The samples of ``ids``, in that order, rebuilt from the stored records."""
        found: dict[str, Sample] = {}
        for start in range(0, len(ids), _RETRIEVE_BATCH):
            batch = [point_id(i) for i in ids[start : start + _RETRIEVE_BATCH]]
            for record in self.shard.retrieve(batch, with_payload=["record"], with_vector=False):
                sample = Sample.model_validate(record.payload["record"])
                found[sample.id] = sample
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in {self.store}/{self.collection}: {missing[:5]}")
        return [found[i] for i in ids]

    def all_ids(self) -> list[str]:
        """Every retrievable sample id (marked near-duplicates left out), sorted."""
        flt = self.edge.Filter(must=[self.edge.IsEmptyCondition(DUP_OF)])
        return sorted(r.payload["sample_id"] for r in self._scroll(["sample_id"], flt))

    def cluster_vectors(self, cluster: int) -> tuple[list[str], np.ndarray]:
        """The ids and stored vectors of one cluster's points (for de-duplication at index time)."""
        edge = self.edge
        flt = edge.Filter(must=[edge.FieldCondition(key="cluster", match=edge.MatchValue(cluster))])
        ids, vectors = [], []
        for record in self._scroll(["sample_id"], flt, with_vector=True):
            ids.append(record.payload["sample_id"])
            vectors.append(_dense(record.vector))
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1 if ids else 0)  # an empty cluster: (0, 0)

    def payloads(self, fields: list[str]) -> Iterable[dict]:
        """Those payload fields of every point, streamed."""
        return (r.payload for r in self._scroll(fields))

    def vectors(self, batch: int = _RETRIEVE_BATCH) -> Iterable[tuple[list[str], np.ndarray]]:
        """(sample ids, their vectors) of every point, streamed in batches (the skill map clusters them)."""
        offset = None
        while self.shard is not None:
            records, offset = self.shard.scroll(self.edge.ScrollRequest(
                limit=batch, offset=offset, with_payload=["sample_id"], with_vector=True))
            if records:
                yield ([r.payload["sample_id"] for r in records],
                       np.asarray([_dense(r.vector) for r in records], dtype=np.float32))
            if offset is None:
                return

    def set_payload(self, sample_ids: Sequence[str], payload: dict) -> None:
        """Set ``payload`` fields on the points of ``sample_ids`` (other fields stay)."""
        for start in range(0, len(sample_ids), _RETRIEVE_BATCH):
            batch = [point_id(i) for i in sample_ids[start : start + _RETRIEVE_BATCH]]
            self.shard.update(self.edge.UpdateOperation.set_payload(batch, payload))

    def set_payload_where(self, key: str, values: Sequence[int | str], payload: dict) -> None:
        """Set ``payload`` fields on every point whose field ``key`` is one of ``values``."""
        edge = self.edge
        flt = edge.Filter(must=[edge.FieldCondition(key=key, match=edge.MatchAny(list(values)))])
        self.shard.update(edge.UpdateOperation.set_payload_by_filter(flt, payload))

    def count_with(self, key: str) -> int:
        """Points whose payload has a non-empty ``key``."""
        if self.shard is None:
            return 0
        edge = self.edge
        return self.shard.count(edge.CountRequest(exact=True, filter=edge.Filter(must_not=[edge.IsEmptyCondition(key)])))

    def _scroll(self, fields: list[str], flt: Any = None, *, with_vector: bool = False) -> Iterable[Any]:
        offset = None
        while self.shard is not None:
            records, offset = self.shard.scroll(self.edge.ScrollRequest(
                limit=_RETRIEVE_BATCH, offset=offset, filter=flt, with_payload=fields, with_vector=with_vector))
            yield from records
            if offset is None:
                return

    def flush(self) -> None:
        if self.shard is not None:
            self.shard.flush()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        (self.store / HOLDER).unlink(missing_ok=True)

    def _holder(self) -> str:
        try:
            holder = read_json(self.store / HOLDER)
        except (OSError, ValueError):
            return "another process"
        return f"pid {holder.get('pid')} ({holder.get('command', '?')}, since {holder.get('since', '?')})"

    # ------------------------------------------------------------------------------------------- writing

    def prepare(self, dim: int, embedder: str) -> bool:
        """Create the shard, or recreate it when it was built with another embedder or dim.
        True when existing points were kept (re-index in place)."""
        edge = self.edge
        old = self.read_manifest()
        if self.shard is not None:
            if old is not None and old.dim == dim and old.embedder == embedder:
                return True
            self.shard.close()
            self.shard = None
            shutil.rmtree(self.shard_path)
            self.manifest_path.unlink(missing_ok=True)
        self._count = None
        graph = edge.HnswIndexConfig(m=DEFAULT_HNSW.m, ef_construct=DEFAULT_HNSW.ef_construct,
                                     full_scan_threshold=10_000)  # KB: the engine's default
        self.shard = edge.EdgeShard.create(str(self.shard_path), edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine), hnsw_config=graph))
        for name, kind in PAYLOAD_INDEXES.items():
            self.shard.update(edge.UpdateOperation.create_field_index(name, getattr(edge.PayloadSchemaType, kind)))
        return False

    def upsert(self, samples: Sequence[Sample], vectors: np.ndarray, clusters: Sequence[int], run: str) -> None:
        points = [self.edge.Point(point_id(s.id), v.tolist(), _payload(s, int(c), run))
                  for s, v, c in zip(samples, vectors, clusters, strict=True)]
        self.shard.update(self.edge.UpdateOperation.upsert_points(points))
        self._count = None

    def delete_stale(self, run: str) -> int:
        """Drop points of earlier runs that this run did not write (records gone from the pool)."""
        edge = self.edge
        stale = edge.Filter(must_not=[edge.FieldCondition(key="run", match=edge.MatchValue(run))])
        n = self.shard.count(edge.CountRequest(exact=True, filter=stale))
        if n:
            self.shard.update(edge.UpdateOperation.delete_points_by_filter(stale))
            self._count = None
        return n

    def mark_duplicates(self, dup_of: dict[str, str]) -> None:
        """Set ``dup_of`` on each marked point (one payload operation per kept sample)."""
        edge = self.edge
        # a shard made before de-duplication existed has no index on the field yet (creating it again is a no-op)
        self.shard.update(edge.UpdateOperation.create_field_index(DUP_OF, edge.PayloadSchemaType.Keyword))
        for kept, marked in group_by_kept(dup_of).items():
            self.shard.update(edge.UpdateOperation.set_payload([point_id(i) for i in marked], {DUP_OF: kept}))

    def write_manifest(self, manifest: IndexManifest) -> None:
        """Last step of indexing: build the HNSW graph, persist, then record how the index was made."""
        self.shard.optimize()
        self.shard.flush()
        atomic_write_text(self.manifest_path, manifest.model_dump_json(indent=2) + "\n")
        self._hnsw_ef = None


def _dense(vector: Any) -> list[float]:
    """A record's vector as a list: the default (unnamed) dense vector, however the engine wraps it."""
    if isinstance(vector, dict):
        vector = next(iter(vector.values()))
    return list(vector)
