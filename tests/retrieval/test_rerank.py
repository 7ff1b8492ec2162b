import numpy as np

from retrieval.rerank import Candidate, RerankConfig, rerank


def _cands(gap: str, rows: list[tuple[str, float, int, list[float]]]) -> list[Candidate]:
    return [Candidate(sample_id=i, gap=gap, query="q", relevance=r, cluster=k, vector=v) for i, r, k, v in rows]


def test_cluster_quota_spreads_the_share_over_clusters():
    rows = [(f"a{i}", 0.9 - i * 0.01, 0, [1.0, i * 0.5, 0.0]) for i in range(6)]
    rows += [(f"b{i}", 0.5 - i * 0.01, 1, [0.0, 1.0, i * 0.5]) for i in range(6)]
    config = RerankConfig(max_cluster_fraction=0.5, dedup_threshold=None)
    out = rerank({"g": _cands("g", rows)}, {"g": 4}, config)
    picked = [c for c in out if c.selected]
    assert len(picked) == 4
    assert {c.cluster for c in picked} == {0, 1}
    assert sum(c.cluster == 0 for c in picked) == 2
    # without the quota the four most relevant (all cluster 0) win
    off = rerank({"g": _cands("g", rows)}, {"g": 4}, config.model_copy(update={"use_clusters": False}))
    assert {c.cluster for c in off if c.selected} == {0}


def test_quota_does_not_underspend_when_one_cluster_is_all_there_is():
    rows = [(f"a{i}", 0.9 - i * 0.01, 0, [1.0, float(i), 0.0]) for i in range(5)]
    out = rerank({"g": _cands("g", rows)}, {"g": 4}, RerankConfig(max_cluster_fraction=0.25, dedup_threshold=None))
    assert sum(c.selected for c in out) == 4


def test_near_duplicates_are_dropped_with_their_reason():
    rows = [("x", 0.9, 0, [1.0, 0.0]), ("x-dup", 0.8, 0, [1.0, 0.001]), ("y", 0.7, 1, [0.0, 1.0])]
    out = rerank({"g": _cands("g", rows)}, {"g": 2}, RerankConfig())
    by_id = {c.sample_id: c for c in out}
    assert by_id["x"].selected and by_id["y"].selected
    assert not by_id["x-dup"].selected and "near-duplicate of x" in by_id["x-dup"].reason
    assert len(out) == 3  # every candidate is accounted for


def test_perturbation_is_only_asked_for_the_shortlist_and_changes_the_order():
    rows = [("a", 0.9, 0, [1.0, 0.0]), ("b", 0.8, 1, [0.0, 1.0]), ("c", 0.7, 2, [1.0, 1.0])]
    asked: list[list[str]] = []

    def perturbation(ids):
        asked.append(list(ids))
        return np.array([{"a": 0.0, "b": 0.0, "c": 5.0}[i] for i in ids])

    config = RerankConfig(perturbation_weight=2.0, dedup_threshold=None)
    out = rerank({"g": _cands("g", rows)}, {"g": 1}, config, perturbation)
    assert asked == [["a", "b", "c"]]
    assert [c.sample_id for c in out if c.selected] == ["c"]
    assert "perturbation 5.000" in next(c.reason for c in out if c.selected)
    off = rerank({"g": _cands("g", rows)}, {"g": 1}, config.model_copy(update={"use_perturbation": False}), perturbation)
    assert [c.sample_id for c in off if c.selected] == ["a"] and len(asked) == 1
