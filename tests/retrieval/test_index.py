"""The pool index on real Qdrant local mode with the real MiniLM: idempotency, manifest, queries, clusters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, embed_texts
from tutorloop.retrieval.index import DEFAULT_HNSW, IndexManifest, PoolIndex, index_pool, point_id


def _pool(tmp_path, kit, n=24, changed: dict | None = None, drop: set | None = None):
    kit.write_png(tmp_path / "images" / "ok.png")
    rows = []
    for i in range(n):
        question = f"{kit.questions[i % len(kit.questions)]} (variant {i})"
        rows.append(kit.record(f"s{i:03d}", question=question, source=f"src{i % 3}"))
    for sample_id, question in (changed or {}).items():
        next(r for r in rows if r["id"] == sample_id)["conversations"][0]["value"] = question
    rows = [r for r in rows if r["id"] not in (drop or set())]
    return kit.write_jsonl(tmp_path / "pool.jsonl", rows)


def _index(pool, store, minilm, **kwargs):
    index = PoolIndex.open(store=store)
    kwargs.setdefault("clusters", 3)
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, progress=False, **kwargs)
    return index, report


def test_index_counts_manifest_and_quarantine(tmp_path, kit, minilm):
    rows, expected = kit.bad_pool(tmp_path / "root", tmp_path / "outside")
    pool = kit.write_jsonl(tmp_path / "root" / "pool.jsonl", rows)
    quarantine = tmp_path / "store" / "quarantine.jsonl"
    index, report = _index(pool, tmp_path / "store", minilm, quarantine_path=quarantine, clusters=2)
    assert report.counts["by_reason"] == expected
    assert report.counts["read"] == report.counts["accepted"] + report.counts["rejected"] == len(rows)
    assert index.count() == report.points == report.counts["accepted"] == 4
    assert report.samples_per_second > 0 and report.seconds["total"] > 0
    rows_out = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert len(rows_out) == report.counts["rejected"]
    assert all({"line", "reason", "detail", "raw"} <= set(r) for r in rows_out)
    assert {r["line"] for r in rows_out if r["reason"] == "image_too_large"} == {14}
    index.close()

    reopened = PoolIndex.open(store=tmp_path / "store")  # the manifest survives a reopen
    manifest = reopened.manifest
    assert manifest == IndexManifest(pool=str(pool.resolve()), image_root=str((tmp_path / "root").resolve()),
                                     embedder=DEFAULT_EMBEDDER, dim=384, clusters=2,
                                     silhouette=manifest.silhouette, count=4, hnsw=DEFAULT_HNSW)
    assert reopened.hnsw_ef == DEFAULT_HNSW.ef  # searched with the ef the manifest recorded
    reopened.close()


def test_a_store_is_searched_with_the_ef_its_manifest_recorded(tmp_path, kit, minilm):
    from tutorloop.retrieval.index import HnswSettings, search_ef

    index, _ = _index(_pool(tmp_path, kit, n=6), tmp_path / "store", minilm, clusters=2)
    index.write_manifest(index.manifest.model_copy(update={"hnsw": HnswSettings(ef=300)}))
    assert index.hnsw_ef == 300
    index.close()
    older = PoolIndex.open(store=tmp_path / "store")
    older.write_manifest(older.manifest.model_copy(update={"hnsw": None}))  # a store that recorded none
    assert older.hnsw_ef == search_ef(None) == DEFAULT_HNSW.ef
    older.close()


def test_reindex_is_idempotent_and_updates_changed_records(tmp_path, kit, minilm):
    store = tmp_path / "store"
    index, first = _index(_pool(tmp_path, kit), store, minilm)
    before = {h.sample_id: h for h in index.query(embed_texts(minilm, ["count circles"])[0], 24)}
    index.close()

    pool = _pool(tmp_path, kit, changed={"s005": "<image>\nWhat time does the clock show?"})
    index, second = _index(pool, store, minilm)
    assert index.count() == first.points == second.points == 24
    assert index.all_ids() == sorted(f"s{i:03d}" for i in range(24))
    hit = next(h for h in index.query(embed_texts(minilm, ["What time does the clock show?"])[0], 1))
    assert hit.sample_id == "s005" and hit.score > 0.99
    assert hit.payload["instruction"] == "What time does the clock show?"
    assert not np.allclose(hit.vector, before["s005"].vector)
    assert index.fetch(["s005"])[0].question == "What time does the clock show?"
    index.close()

    index, third = _index(_pool(tmp_path, kit, drop={"s000", "s001"}), store, minilm)
    assert third.stale_deleted == 2 and index.count() == 22 and "s000" not in index.all_ids()
    index.close()


def test_query_excludes_ids_and_fetch_keeps_order(tmp_path, kit, minilm):
    index, _ = _index(_pool(tmp_path, kit), tmp_path / "store", minilm)
    vector = embed_texts(minilm, ["How many circles are there?"])[0]
    top = index.query(vector, 5)
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    excluded = {top[0].sample_id, top[2].sample_id}
    filtered = index.query(vector, 5, exclude_ids=excluded)
    assert len(filtered) == 5 and not excluded & {h.sample_id for h in filtered}
    assert [h.sample_id for h in filtered[:3]] == [top[1].sample_id, top[3].sample_id, top[4].sample_id]
    # the filter path (a server, or a large exclusion set) gives the same answer
    index.LOCAL_OVERFETCH_MAX = 0
    assert [h.sample_id for h in index.query(vector, 5, exclude_ids=excluded)] == [h.sample_id for h in filtered]
    hit = filtered[0]
    assert hit.vector.shape == (384,) and hit.cluster in range(3)
    assert {"sample_id", "source", "image", "instruction", "cluster", "record"} <= set(hit.payload)
    samples = index.fetch(["s010", "s002"])
    assert [s.id for s in samples] == ["s010", "s002"] and samples[0].source == "src1"
    with pytest.raises(KeyError, match="nope"):
        index.fetch(["nope"])
    index.close()


def test_auto_clusters_pick_k_and_store_ids(tmp_path, kit, minilm):
    kit.write_png(tmp_path / "images" / "ok.png")
    topics = ["How many {} circles are in the picture?", "What colour is the {} car?", "Read the {} text on the sign."]
    words = ["small", "big", "round", "shiny", "old", "new", "dark", "bright", "tiny", "huge", "odd", "plain"]
    rows = [kit.record(f"t{t}-{w}", question=topic.format(word)) for t, topic in enumerate(topics)
            for w, word in enumerate(words)]
    pool = kit.write_jsonl(tmp_path / "pool.jsonl", rows)
    index, report = _index(pool, tmp_path / "store", minilm, clusters="auto")
    assert report.k >= 2 and report.k in report.silhouette_grid and report.silhouette is not None
    assert report.k == max(report.silhouette_grid, key=report.silhouette_grid.get)
    clusters = {p["sample_id"]: p["cluster"] for p in index.payloads(["sample_id", "cluster"])}
    assert set(clusters.values()) <= set(range(report.k)) and len(set(clusters.values())) >= 2
    # the same topic lands in the same cluster for most of its samples
    for t in range(3):
        labels = [clusters[f"t{t}-{w}"] for w in range(len(words))]
        assert max(labels.count(c) for c in set(labels)) >= len(words) * 0.75
    assert index.manifest.clusters == report.k
    index.close()


def test_point_ids_are_deterministic():
    assert point_id("pool-1") == point_id("pool-1") != point_id("pool-2")


def test_nothing_valid_leaves_the_index_alone(tmp_path, kit, minilm):
    store = tmp_path / "store"
    index, _ = _index(_pool(tmp_path, kit, n=6), store, minilm)
    kit.write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"id": "x"}])
    with pytest.raises(ValueError, match="bad.jsonl"):
        index_pool(tmp_path / "bad.jsonl", index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, progress=False)
    assert index.count() == 6
    # valid JSON whose images are all missing passes the sample pass but is rejected in the main pass
    kit.write_jsonl(tmp_path / "noimg.jsonl", [kit.record("z", image="images/none.png")])
    with pytest.raises(ValueError, match="every record was rejected"):
        index_pool(tmp_path / "noimg.jsonl", index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, progress=False)
    assert index.count() == 6
    index.close()


def test_missing_manifest_is_a_clear_error(tmp_path):
    index = PoolIndex.open(store=tmp_path / "empty")
    with pytest.raises(LookupError, match="tutorloop index"):
        _ = index.manifest
    index.close()
    with pytest.raises(ValueError, match="exactly one"):
        PoolIndex.open()


def test_another_embedder_recreates_the_collection(tmp_path, kit, minilm):
    store = tmp_path / "store"
    index, _ = _index(_pool(tmp_path, kit, n=6), store, minilm)
    assert index.prepare(384, "some/other-model") is False  # different vectors: start over
    assert index.count() == 0
    index.close()


def test_a_store_of_the_old_local_mode_gets_a_clear_message(tmp_path):
    from tutorloop.agents.cli import main
    from tutorloop.retrieval.edge_index import LegacyStoreError
    from tutorloop.retrieval.index import PoolIndex

    old = tmp_path / "old-store"
    (old / "collection").mkdir(parents=True)
    (old / "meta.json").write_text("{}")
    with pytest.raises(LegacyStoreError, match="older tutorloop"):
        PoolIndex.open(store=old)
    val = tmp_path / "val.jsonl"
    val.write_text("")
    assert main(["run", "--student", "s", "--val", str(val), "--store", str(old), "--budget", "2",
                 "--selector", "random", "--out", str(tmp_path / "run")]) == 2


def test_a_store_held_by_another_process_names_the_holder(tmp_path, hold_store):
    import json
    import os

    from tutorloop.retrieval.edge_index import EdgeIndex, StoreInUse

    store = tmp_path / "store"
    first = EdgeIndex(store)
    first.prepare(4, "test-embedder")
    first.close()
    holder = hold_store(store, 60)
    with pytest.raises(StoreInUse, match=rf"in use by pid {holder.pid} "):
        EdgeIndex(store)
    assert json.loads((store / "holder.json").read_text())["pid"] == holder.pid != os.getpid()


def test_two_indexes_of_one_pool_return_the_same_samples_among_equals(tmp_path, kit, minilm):
    """24 samples ask one question (one vector): which of them a query returns must not depend on the order
    the pool file lists them in, so one seed selects the same samples from any rebuild of the index."""
    kit.write_png(tmp_path / "images" / "ok.png")
    rows = [kit.record(f"s{i:03d}", question="what colour is the shape on the left?") for i in range(24)]
    rows += [kit.record(f"o{i:03d}", question=f"how many shapes are there? ({i})") for i in range(8)]
    found = []
    for name, order in (("listed", rows), ("reversed", rows[::-1])):
        pool = kit.write_jsonl(tmp_path / f"{name}.jsonl", order)
        index, _ = _index(pool, tmp_path / f"store-{name}", minilm, clusters=2)
        vector = embed_texts(minilm, ["what colour is the shape on the left?"], 8)[0]
        found.append([hit.sample_id for hit in index.query(vector, 5)])
        index.close()
    assert found[0] == found[1]
    assert found[0] != [f"s{i:03d}" for i in range(5)], "nor the file's first five"
