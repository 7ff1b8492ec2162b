"""SemDeDup at index time: the groups and who is kept, the exact pre-filter, blockwise = all at once, and on
real stores (qdrant-edge; qdrant-client's local mode for the server backend's code) marked points carry
``dup_of``, are never retrieved nor drawn, and the summary counts them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, embed_texts
from tutorloop.retrieval.index import DUP_OF, PoolIndex, index_pool
from tutorloop.retrieval.semdedup import (
    answer_key,
    centrality_order,
    cluster_duplicates,
    greedy_duplicates,
    has_neighbour_above,
    unit,
)


def _near(base: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    return unit(base + rng.normal(0, scale, base.shape))


def test_groups_keep_the_most_central_sample_and_ignore_input_order():
    rng = np.random.default_rng(0)
    anchors = unit(rng.normal(size=(6, 32)))
    # sample a* are distinct; b0/b1 are near-copies of a0, c0 a near-copy of a3
    vectors = np.vstack([anchors, _near(anchors[0:1], rng, 0.01), _near(anchors[0:1], rng, 0.01),
                         _near(anchors[3:4], rng, 0.01)])
    ids = [f"a{i}" for i in range(6)] + ["b0", "b1", "c0"]
    found = cluster_duplicates(ids, vectors, None, 0.95).duplicates
    assert set(found) | {found[k] for k in found} >= {"b0", "b1", "c0"}
    groups: dict[str, set] = {}
    for marked, kept in found.items():
        groups.setdefault(kept, set()).add(marked)
    assert sorted(len(g) + 1 for g in groups.values()) == [2, 3]  # {a0, b0, b1} and {a3, c0}
    # the kept sample of a group is the one nearest the cluster's centre
    order = centrality_order(ids, unit(vectors))
    rank = {ids[i]: r for r, i in enumerate(order)}
    for kept, marked in groups.items():
        assert all(rank[kept] < rank[m] for m in marked)
    assert all(f"a{i}" not in found for i in (1, 2, 4, 5))  # the distinct ones stay
    shuffled = rng.permutation(len(ids))
    again = cluster_duplicates([ids[i] for i in shuffled], vectors[shuffled], None, 0.95).duplicates
    assert again == found


def test_a_sample_similar_only_to_a_marked_one_is_kept():
    """No chains: c is close to b, b to a, but c is not close to a: b is marked, c stays."""
    a = np.array([1.0, 0.0, 0.0])
    b = unit(np.array([[1.0, 0.3, 0.0]]))[0]  # cos(a, b) ~ 0.958
    c = unit(np.array([[1.0, 0.62, 0.0]]))[0]  # cos(b, c) ~ 0.98, cos(a, c) ~ 0.85
    vectors = np.vstack([a, b, c])
    dup_of = greedy_duplicates(vectors, 0.95)
    assert dup_of.tolist() == [-1, 0, -1]


def test_blockwise_equals_one_block():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(40, 16)))
    vectors = np.vstack([base, _near(base[:25], rng, 0.03)])
    ids = [f"s{i:03d}" for i in range(len(vectors))]
    whole = cluster_duplicates(ids, vectors, None, 0.95, block=4096).duplicates
    assert whole and cluster_duplicates(ids, vectors, None, 0.95, block=7).duplicates == whole
    ranked = unit(vectors)
    np.testing.assert_array_equal(has_neighbour_above(ranked, 0.9, block=5), has_neighbour_above(ranked, 0.9))


def test_images_and_answers_decide_with_the_text():
    """Same text: duplicates only with the same image thumbnail and the same short answer; a sample with an
    image never duplicates one without."""
    text = np.tile(unit(np.ones((1, 8))), (5, 1))
    thumbnails = unit(np.random.default_rng(2).normal(size=(3, 12)))
    table = {"same-img": (thumbnails[0], "red"), "same-img-2": (thumbnails[0], "Red."),
             "other-img": (thumbnails[1], "red"), "other-answer": (thumbnails[0], "blue"),
             "no-img": (np.zeros(12), "red")}
    ids = list(table)

    def details(names):
        return np.stack([table[n][0] for n in names]), [table[n][1] for n in names]

    found = cluster_duplicates(ids, text, details, 0.95).duplicates
    assert found == {"same-img-2": "same-img"} or found == {"same-img": "same-img-2"}
    assert answer_key("Red.") == answer_key("red") and answer_key("a long free-form answer of many words") is None


def _noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(out, format="PNG")
    return out.getvalue()


def _dup_pool(tmp_path, kit):
    """12 samples on 12 different images, one repeated question, and two planted near-duplicates:
    ``d-same`` (the image of s000 re-saved, the same question reworded slightly) and ``d-text`` (a
    text-only sample repeating t000)."""
    images = tmp_path / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(12):
        (images / f"{i:03d}.png").write_bytes(_noise_png(i))
        question = "How many circles are there?" if i < 6 else kit.questions[i % len(kit.questions)]
        rows.append(kit.record(f"s{i:03d}", image=f"images/{i:03d}.png", question=question, answer="3"))
    (images / "copy.png").write_bytes(_noise_png(0))
    rows.append(kit.record("d-same", image="images/copy.png", question="How many circles are there here?",
                           answer="3"))
    rows.append(kit.record("t000", image=None, question="What is the capital of France?", answer="Paris"))
    rows.append(kit.record("d-text", image=None, question="What is the capital of France?", answer="Paris"))
    return kit.write_jsonl(tmp_path / "pool.jsonl", rows)


def _check_marks(index, report, minilm):
    assert report.dedup is not None and report.duplicates == 2 == report.dedup["marked"]
    marked = {p["sample_id"]: p.get(DUP_OF) for p in index.payloads(["sample_id", DUP_OF]) if p.get(DUP_OF)}
    assert marked in ({"d-same": "s000", "d-text": "t000"}, {"s000": "d-same", "d-text": "t000"},
                      {"d-same": "s000", "t000": "d-text"}, {"s000": "d-same", "t000": "d-text"})
    # the same question on five other images is five lessons, not duplicates
    assert not {f"s{i:03d}" for i in range(1, 6)} & set(marked)
    assert index.count() == 15 and index.manifest.duplicates == 2 and index.manifest.semdedup_threshold == 0.95
    retrievable = index.all_ids()
    assert len(retrievable) == 13 and not set(marked) & set(retrievable)
    for text in ("How many circles are there here?", "What is the capital of France?"):
        hits = index.query(embed_texts(minilm, [text])[0], 15)
        assert len(hits) == 13 and not set(marked) & {h.sample_id for h in hits}
        kept = {h.sample_id for h in index.query(embed_texts(minilm, [text])[0], 15, exclude_ids={"s001"})}
        assert "s001" not in kept and not set(marked) & kept and len(kept) == 12


def test_edge_store_marks_and_never_retrieves_duplicates(tmp_path, kit, minilm):
    pool = _dup_pool(tmp_path, kit)
    index = PoolIndex.open(store=tmp_path / "store")
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                        progress=False, semdedup_threshold=0.95)
    _check_marks(index, report, minilm)
    assert report.seconds["semdedup"] >= 0
    index.close()

    # re-indexing in place recomputes the marks (the upsert replaced every payload); off clears them
    index = PoolIndex.open(store=tmp_path / "store")
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                        progress=False, semdedup_threshold=0.95)
    _check_marks(index, report, minilm)
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                        progress=False)
    assert report.dedup is None and len(index.all_ids()) == 15 and index.manifest.duplicates == 0
    index.close()


def test_server_backend_code_marks_and_never_retrieves_duplicates(tmp_path, kit, minilm, local_server):
    """The server backend's code (retrieval/server_index.py) on qdrant-client's local mode: the same marks."""
    pool = _dup_pool(tmp_path, kit)
    index = local_server(tmp_path / "local")
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                        progress=False, semdedup_threshold=0.95)
    _check_marks(index, report, minilm)
    index.close()


def test_index_cli_summary_counts_the_duplicates_and_off_switches_it_off(tmp_path, kit, capsys):
    """`tutorloop index` (default threshold 0.95): the table says how many were marked, the manifest too."""
    from tutorloop.agents.cli import main

    pool = _dup_pool(tmp_path, kit)
    store = tmp_path / "store"
    assert main(["index", "--pool", str(pool), "--store", str(store), "--clusters", "2", "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "near-duplicates marked (cosine > 0.95) │ 2 in 2 groups" in text
    assert "near-duplicate marking (SemDeDup)" in text
    index = PoolIndex.open(store=store)
    assert index.manifest.duplicates == 2 and len(index.all_ids()) == 13
    index.close()

    assert main(["index", "--pool", str(pool), "--store", str(store), "--clusters", "2", "--no-progress",
                 "--semdedup", "off"]) == 0
    assert "near-duplicates marked" not in capsys.readouterr().out
    index = PoolIndex.open(store=store)
    assert index.manifest.duplicates == 0 and index.manifest.semdedup_threshold is None
    assert len(index.all_ids()) == 15
    index.close()


@pytest.mark.slow
@pytest.mark.integration
def test_ray_path_marks_the_same_duplicates(tmp_path, kit, minilm):
    """The Ray pipeline shares `finalize`, so it marks the same points with the same kept ids."""
    ray = pytest.importorskip("ray", reason="ray is in the dev extra")
    from tutorloop.retrieval.ray_index import index_pool_ray

    pool = _dup_pool(tmp_path, kit)
    single = PoolIndex.open(store=tmp_path / "single")
    index_pool(pool, index=single, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=2, progress=False,
               semdedup_threshold=0.95)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = PoolIndex.open(store=tmp_path / "ray")
        report = index_pool_ray(pool, index=distributed, embedder_name=DEFAULT_EMBEDDER, clusters=2,
                                semdedup_threshold=0.95)
    finally:
        ray.shutdown()

    def marks(index):
        return {p["sample_id"]: p.get(DUP_OF) for p in index.payloads(["sample_id", DUP_OF])}

    assert report.duplicates == 2 and marks(single) == marks(distributed)
    assert single.all_ids() == distributed.all_ids()
    single.close()
    distributed.close()


def test_a_cluster_with_no_points_is_skipped(tmp_path, kit, minilm):
    # more clusters than distinct texts: k-means leaves some empty (a pool of few phrasings asks this)
    pool = _dup_pool(tmp_path, kit)
    index = PoolIndex.open(store=tmp_path / "store")
    report = index_pool(pool, index=index, embedder=minilm, embedder_name=DEFAULT_EMBEDDER, clusters=14,
                        progress=False, semdedup_threshold=0.95)
    assert report.counts["accepted"] == 15 and index.manifest.duplicates >= 1
    index.close()
