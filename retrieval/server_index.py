"""The pool index on a Qdrant server or cluster, through qdrant-client (``PoolIndex.open(url=...)``).

The manifest travels as the collection's metadata; the fields the loop filters on get payload indexes when
the collection is made. Its interface is `PoolIndex`'s (retrieval/index.py), as the embedded store's is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from tutorloop.retrieval.defaults import DEFAULT_COLLECTION
from tutorloop.retrieval.index import (
    _RETRIEVE_BATCH,
    DEFAULT_HNSW,
    DUP_OF,
    MANIFEST_KEY,
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


class ServerIndex:
    """A handle on one collection of a Qdrant server or cluster; open with ``PoolIndex.open(url=...)``."""

    def __init__(self, client: QdrantClient, collection: str = DEFAULT_COLLECTION) -> None:
        self.client = client
        self.collection = collection
        self._hnsw_ef: int | None = None  # read from the manifest at the first search

    @classmethod
    def connect(cls, url: str, collection: str = DEFAULT_COLLECTION, api_key: str | None = None) -> ServerIndex:
        key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY") or None
        return cls(QdrantClient(url=url, api_key=key), collection)

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
        """Top ``limit`` by cosine, never returning a sample in ``exclude_ids`` (dropped from an over-fetched search,
        filtered only when they crowd it: ``without_excluded``); with ``skills``, only points whose payload
        ``skill`` (the skill map's, agents/skills.py) is one of them."""
        query = np.asarray(vector, dtype=np.float32).tolist()

        def search(k: int, ids: frozenset[str]) -> list[Hit]:
            return [_hit(p) for p in self._query(query, k, self._filter(ids, skills), with_vectors)]

        return without_excluded(search, limit, frozenset(exclude_ids), key=lambda hit: hit.sample_id,
                                score=lambda hit: hit.score)

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

    def _query(self, query: list[float], limit: int, flt: models.Filter | None, with_vectors: bool) -> list:
        if self._hnsw_ef is None:
            self._hnsw_ef = search_ef(self.read_manifest())
        return self.client.query_points(
            self.collection, query=query, limit=limit, query_filter=flt, with_payload=True, with_vectors=with_vectors,
            search_params=models.SearchParams(hnsw_ef=max(self._hnsw_ef, limit)),
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
                self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                hnsw_config=models.HnswConfigDiff(m=DEFAULT_HNSW.m, ef_construct=DEFAULT_HNSW.ef_construct),
            )
            for name, kind in (("sample_id", "KEYWORD"), ("run", "KEYWORD"), ("source", "KEYWORD"),
                               ("skill", "KEYWORD"), ("cluster", "INTEGER"),
                               ("skill_cluster", "INTEGER"), (DUP_OF, "KEYWORD")):  # the fields the loop filters on
                self.client.create_payload_index(self.collection, name, getattr(models.PayloadSchemaType, kind))
        return kept

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
        # a collection made before de-duplication existed has no index on the field yet
        self.client.create_payload_index(self.collection, DUP_OF, models.PayloadSchemaType.KEYWORD)
        operations = [models.SetPayloadOperation(set_payload=models.SetPayload(
            payload={DUP_OF: kept}, points=[point_id(i) for i in marked]))
            for kept, marked in group_by_kept(dup_of).items()]
        for start in range(0, len(operations), _RETRIEVE_BATCH):
            self.client.batch_update_points(self.collection, operations[start : start + _RETRIEVE_BATCH], wait=True)

    def write_manifest(self, manifest: IndexManifest) -> None:
        self.client.update_collection(self.collection, metadata={MANIFEST_KEY: manifest.model_dump(mode="json")})
        self._hnsw_ef = None




NOT_DUPLICATE = models.IsEmptyCondition(is_empty=models.PayloadField(key=DUP_OF))


def _fused(hit: Hit, arms: Sequence[Arm], found: Sequence[Sequence[str]]) -> FusedHit:
    names = tuple(dict.fromkeys(a.name for a, ids in zip(arms, found, strict=True) if hit.sample_id in ids))
    return FusedHit(hit.sample_id, hit.score, hit.cluster, hit.vector, hit.payload, arms=names)


def _hit(point: Any) -> Hit:
    payload = point.payload or {}
    vector = None if point.vector is None else np.asarray(point.vector, dtype=np.float32)
    return Hit(payload.get("sample_id", ""), float(point.score), payload.get("cluster"), vector, payload)


# ================================================================================ the `index` stage


