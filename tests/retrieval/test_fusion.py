"""Reciprocal rank fusion: our function against the definition, and the two backends against each other
(the embedded store fuses in retrieval/fusion.py; the server path asks Qdrant's query API, prefetch +
RRF, here answered by qdrant-client's local mode, which implements Qdrant's RRF)."""

from __future__ import annotations

import numpy as np
import pytest

from tutorloop.retrieval.edge_index import EdgeIndex
from tutorloop.retrieval.fusion import RRF_K, rrf
from tutorloop.retrieval.index import Arm
from tutorloop.retrieval.records import Sample


def test_scores_follow_the_definition():
    lists = [["a", "b", "c"], ["c", "a"], ["d"]]
    fused = {f.key: f for f in rrf(lists, k=60)}
    assert fused["a"].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"].score == pytest.approx(1 / 62)
    assert fused["d"].score == pytest.approx(1 / 61)
    assert fused["a"].ranks == {0: 1, 1: 2} and fused["d"].ranks == {2: 1}
    assert [f.key for f in rrf(lists, k=60)] == ["a", "c", "d", "b"]  # d (first once) beats b (second once)


def test_order_ties_duplicates_and_limit():
    # equal fused scores keep the first-seen key first; a key repeated within one list counts once
    assert [f.key for f in rrf([["x", "y"], ["y", "x"]])] == ["x", "y"]
    assert rrf([["x", "x", "y"]])[0].score == pytest.approx(1 / (RRF_K + 1))
    assert rrf([["x", "x", "y"]])[1].score == pytest.approx(1 / (RRF_K + 2))
    assert len(rrf([["a", "b", "c"]], limit=2)) == 2 and rrf([]) == []
    with pytest.raises(ValueError):
        rrf([["a"]], k=-1)


def test_a_sample_in_both_arms_beats_one_ranked_first_in_one():
    fused = rrf([["solo", "both"], ["other", "both"]])
    assert fused[0].key == "both"


def _samples(n: int) -> list[Sample]:
    return [Sample.model_validate({"id": f"s{i}", "conversations": [{"from": "human", "value": f"q{i}"},
                                                                    {"from": "gpt", "value": "a"}]}) for i in range(n)]


def _fill(index, vectors: np.ndarray) -> None:
    index.prepare(vectors.shape[1], "test-embedder")
    index.upsert(_samples(len(vectors)), vectors, [i % 3 for i in range(len(vectors))], "run")
    index.set_payload([f"s{i}" for i in range(len(vectors)) if i % 2 == 0], {"skill": "even"})
    index.set_payload([f"s{i}" for i in range(len(vectors)) if i % 5 == 0], {"skill": "fives"})


def test_server_fusion_and_embedded_fusion_agree(tmp_path, local_server):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(80, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(2, 8))
    arms = [Arm("skill-map:0", queries[0], ("even",)), Arm("free-text:0", queries[0]),
            Arm("skill-map:1", queries[1], ("even", "fives")), Arm("free-text:1", queries[1])]
    server = local_server(tmp_path / "server")
    edge = EdgeIndex(tmp_path / "edge")
    try:
        results = []
        for index in (server, edge):
            _fill(index, vectors)
            results.append([(h.sample_id, round(h.score, 6), h.arms) for h in index.hybrid_query(arms, 12, {"s2"})])
        assert results[0] == results[1]
        # and both are the definition applied to each arm's own ranking
        ranked = [[h.sample_id for h in edge.query(a.vector, 12, {"s2"}, skills=a.skills)] for a in arms]
        expected = [(f.key, round(f.score, 6)) for f in rrf(ranked, limit=12)]
        assert [(i, s) for i, s, _ in results[1]] == expected
        hits = edge.hybrid_query(arms, 12, {"s2"})
        for hit in hits:
            assert hit.sample_id != "s2"
            if any(name.startswith("skill-map") for name in hit.arms):
                assert hit.payload["skill"] in {"even", "fives"}
    finally:
        server.close()
        edge.close()


def test_the_skill_filter_restricts_a_plain_query(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    edge = EdgeIndex(tmp_path / "edge")
    try:
        _fill(edge, vectors)
        assert edge.count_with("skill") == 18  # 15 even + 3 odd multiples of five (0, 10, 20 overwritten)
        ids = [h.sample_id for h in edge.query(vectors[1], 30, skills=["fives"])]
        assert sorted(ids) == sorted(f"s{i}" for i in range(30) if i % 5 == 0)
        edge.set_payload_where("skill", ["fives"], {"skill": None})
        assert edge.count_with("skill") == 12
    finally:
        edge.close()
