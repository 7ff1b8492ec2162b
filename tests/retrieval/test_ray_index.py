"""`tutorloop index --ray` on a local Ray (2 CPUs): the same points, ids, clusters, counts and quarantine as
the single-process path, on a pool with every kind of bad record, JSONL split into several read tasks."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _points(index) -> dict[str, dict]:
    return {p["sample_id"]: p for p in index.payloads(["sample_id", "cluster", "record", "source"])}


def test_the_ray_pipeline_builds_the_same_index(tmp_path, kit, minilm, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is in the dev extra")
    import tutorloop.retrieval.ray_index as ray_index
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
    from tutorloop.retrieval.index import PoolIndex, index_pool

    rows, expected = kit.bad_pool(tmp_path / "root", tmp_path / "outside")
    rows += [kit.record(f"more-{i}", question=q) for i, q in enumerate(kit.questions * 5)]
    pool = kit.write_jsonl(tmp_path / "root" / "pool.jsonl", rows)
    monkeypatch.setattr(ray_index, "RANGE_BYTES", 2048)  # several read tasks, split at line boundaries
    assert len(ray_index._read_units(pool)) > 2

    single = PoolIndex.open(store=tmp_path / "single")
    report_single = index_pool(pool, index=single, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=3,
                               quarantine_path=tmp_path / "q-single.jsonl", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = PoolIndex.open(store=tmp_path / "ray")
        report_ray = ray_index.index_pool_ray(pool, index=distributed, embedder_name=DEFAULT_EMBEDDER, clusters=3,
                                              quarantine_path=tmp_path / "q-ray.jsonl")
    finally:
        ray.shutdown()
    assert report_ray.counts == report_single.counts and report_ray.counts["by_reason"] == {
        **report_single.counts["by_reason"], **{k: v for k, v in expected.items()}}
    assert (tmp_path / "q-ray.jsonl").read_text() == (tmp_path / "q-single.jsonl").read_text()
    a, b = _points(single), _points(distributed)
    assert a.keys() == b.keys() and len(a) == report_single.counts["accepted"]
    assert all(a[k]["record"] == b[k]["record"] and a[k]["cluster"] == b[k]["cluster"] for k in a)
    query = minilm.encode(["How many circles?"], normalize_embeddings=True)[0]
    hits_a, hits_b = single.query(query, 10), distributed.query(query, 10)
    # the pool repeats questions: equal vectors tie, and ties may come in either order
    assert np.allclose([h.score for h in hits_a], [h.score for h in hits_b], atol=1e-5)
    vectors_a = {h.sample_id: h.vector for h in single.query(query, len(a))}
    vectors_b = {h.sample_id: h.vector for h in distributed.query(query, len(b))}
    assert all(np.allclose(vectors_a[k], vectors_b[k], atol=1e-5) for k in vectors_a)
    single.close()
    distributed.close()


def test_table_pools_on_ray_match_one_process(tmp_path, minilm):
    """A folder of Parquet files and a datasets.save_to_disk folder: one read task per file, rows numbered
    across files as the single-process path numbers them, the images read from the table by reference."""
    ray = pytest.importorskip("ray", reason="ray is in the dev extra")
    datasets = pytest.importorskip("datasets", reason="datasets is in the dev extra")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    import tutorloop.retrieval.ray_index as ray_index
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
    from tutorloop.retrieval.index import PoolIndex, index_pool

    def png(colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = [{"id": f"r{i}", "image": {"bytes": png(c) if i != 3 else b"junk", "path": None},
             "conversations": [{"from": "human", "value": f"<image>\nIs it {c}? ({i})"}, {"from": "gpt", "value": "yes"}]}
            for i, c in enumerate(["red", "blue", "green", "black", "white", "gray"])]
    folder = tmp_path / "parquet"
    folder.mkdir()
    for part in range(2):
        pq.write_table(pa.Table.from_pylist(rows[3 * part: 3 * part + 3]), folder / f"part-{part}.parquet")
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}]})
    datasets.Dataset.from_list([r for r in rows if r["id"] != "r3"], features=features).save_to_disk(str(tmp_path / "saved"))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for pool in (folder, tmp_path / "saved"):
            assert [u[3] for u in ray_index._read_units(pool)] == ([1, 4] if pool == folder else [1])
            single = PoolIndex.open(store=tmp_path / f"single-{pool.name}")
            index_pool(pool, index=single, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                       quarantine_path=tmp_path / f"q-single-{pool.name}.jsonl", progress=False)
            distributed = PoolIndex.open(store=tmp_path / f"ray-{pool.name}")
            report = ray_index.index_pool_ray(pool, index=distributed, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                                              quarantine_path=tmp_path / f"q-ray-{pool.name}.jsonl")
            assert report.counts["accepted"] == 5 and report.counts["rejected"] == (1 if pool == folder else 0)
            assert (tmp_path / f"q-ray-{pool.name}.jsonl").read_text() == \
                (tmp_path / f"q-single-{pool.name}.jsonl").read_text()
            assert _points(single) == _points(distributed)
            single.close()
            distributed.close()
    finally:
        ray.shutdown()
