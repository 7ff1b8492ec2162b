import numpy as np
import pytest

from tutorloop.retrieval.rerank import Candidate, RerankConfig, rerank


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


def test_relevance_alone_ranks_by_default_and_asks_the_student_nothing():
    rows = [("a", 0.7, 0, [1.0, 0.0]), ("b", 0.9, 1, [0.0, 1.0]), ("c", 0.8, 2, [1.0, 1.0])]

    def never(ids):
        raise AssertionError(f"the default re-rank asked the student about {ids}")

    out = rerank({"g": _cands("g", rows)}, {"g": 2}, RerankConfig(dedup_threshold=None), never)
    assert RerankConfig().active_scorer == "none"
    assert {c.sample_id for c in out if c.selected} == {"b", "c"}


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

    config = RerankConfig(scorer="perturbation", perturbation_weight=2.0, dedup_threshold=None)
    out = rerank({"g": _cands("g", rows)}, {"g": 1}, config, perturbation)
    assert asked == [["a", "b", "c"]]
    assert [c.sample_id for c in out if c.selected] == ["c"]
    assert "perturbation 5.000" in next(c.reason for c in out if c.selected)
    off = rerank({"g": _cands("g", rows)}, {"g": 1}, config.model_copy(update={"use_perturbation": False}), perturbation)
    assert [c.sample_id for c in off if c.selected] == ["a"] and len(asked) == 1


def _scorer_table(table: dict[str, dict[str, float]], asked: list | None = None):
    from tutorloop.retrieval.rerank import StudentScores

    def score(name, ids):
        if asked is not None:
            asked.append((name, list(ids)))
        return np.array([table[name][i] for i in ids])

    return StudentScores(tuple(table), score)


def test_histogram_entropy_prefers_spread_out_scores():
    from tutorloop.retrieval.rerank import histogram_entropy

    assert histogram_entropy(np.array([3.0, 3.0, 3.0]), 10) == 0.0
    assert histogram_entropy(np.array([1.0]), 10) == 0.0
    two_lumps = histogram_entropy(np.array([0.0, 0.01, 0.02, 1.0, 0.99, 0.98]), 10)
    spread = histogram_entropy(np.linspace(0, 1, 6), 10)
    assert abs(two_lumps - np.log(2)) < 1e-9 and abs(spread - np.log(6)) < 1e-9
    assert histogram_entropy(np.array([0.0, 1.0, np.inf]), 4) == histogram_entropy(np.array([0.0, 1.0, 1.0]), 4)


def test_entropy_rule_picks_per_cluster_the_scorer_that_spreads_most_and_records_it():
    # cluster 0: "flat" is constant there, "spread" varies; cluster 1 the other way round
    rows = [(f"a{i}", 0.5, 0, None) for i in range(4)] + [(f"b{i}", 0.5, 1, None) for i in range(4)]
    table = {"flat": {**{f"a{i}": 1.0 for i in range(4)}, **{f"b{i}": float(i) for i in range(4)}},
             "spread": {**{f"a{i}": float(i) for i in range(4)}, **{f"b{i}": 2.0 for i in range(4)}}}
    asked: list = []
    config = RerankConfig(scorer="entropy", dedup_threshold=None, max_cluster_fraction=0.5)
    out = rerank({"g": _cands("g", rows)}, {"g": 4}, config, _scorer_table(table, asked))
    assert sorted(name for name, _ in asked) == ["flat", "spread"]  # each scorer asked once, for the shortlist
    assert all(ids == sorted(ids) and len(ids) == 8 for _, ids in asked)
    by_id = {c.sample_id: c for c in out}
    assert {by_id[f"a{i}"].scorer for i in range(4)} == {"spread"}
    assert {by_id[f"b{i}"].scorer for i in range(4)} == {"flat"}
    assert by_id["a3"].scores == {"flat": 1.0, "spread": 3.0}
    picked = {c.sample_id for c in out if c.selected}
    assert picked == {"a3", "a2", "b3", "b2"}  # equal relevance: the chosen score decides, two per cluster
    assert "entropy rule: spread spreads the most on cluster 0" in by_id["a3"].reason
    assert by_id["a3"].why().scorer == "spread"  # what selected.jsonl carries


def test_a_named_scorer_ranks_everyone_and_none_is_relevance_only():
    rows = [("a", 0.9, 0, None), ("b", 0.8, 1, None), ("c", 0.7, 2, None)]
    table = {"perturbation": {"a": 0.0, "b": 0.0, "c": 0.0}, "hard": {"a": 0.0, "b": 0.0, "c": 9.0}}
    scorers = _scorer_table(table)
    config = RerankConfig(scorer="hard", perturbation_weight=2.0, dedup_threshold=None)
    out = rerank({"g": _cands("g", rows)}, {"g": 1}, config, scorers)
    assert [c.sample_id for c in out if c.selected] == ["c"]
    assert {c.scorer for c in out} == {"hard"} and "hard 9.000" in out[0].reason
    plain = rerank({"g": _cands("g", rows)}, {"g": 1}, config.model_copy(update={"scorer": "none"}), scorers)
    assert [c.sample_id for c in plain if c.selected] == ["a"] and {c.scorer for c in plain} == {"none"}
    assert all(c.scores == {} and "relevance only" in c.reason for c in plain)
    with pytest.raises(ValueError, match="unknown scorer 'missing'"):
        rerank({"g": _cands("g", rows)}, {"g": 1}, config.model_copy(update={"scorer": "missing"}), scorers)


def test_a_gap_short_of_candidates_passes_its_share_on():
    from tutorloop.retrieval.rerank import pass_on_unfilled

    assert pass_on_unfilled({"a": 5, "b": 10, "c": 5}, {"a": 2, "b": 30, "c": 6}) == {"a": 2, "b": 13, "c": 5}
    assert pass_on_unfilled({"a": 5, "b": 10}, {"a": 2, "b": 11}) == {"a": 2, "b": 11}  # all there is
    assert pass_on_unfilled({"a": 3}, {}) == {"a": 0}
    short = _cands("short", [("s0", 0.9, 0, [1.0, 0.0, 0.0])])
    long = _cands("long", [(f"l{i}", 0.8 - i * 0.01, i, [0.0, 1.0, float(i)]) for i in range(8)])
    out = rerank({"short": short, "long": long}, {"short": 3, "long": 3}, RerankConfig(dedup_threshold=None))
    assert sum(c.selected for c in out) == 6
    assert sum(c.selected for c in out if c.gap == "long") == 5


def test_equal_scores_are_marked_and_ordered_by_a_seeded_shuffle_not_by_id():
    rows = [(f"s{i:02d}", 0.915, 0, None) for i in range(20)] + [("top", 0.99, 0, None)]
    config = RerankConfig(use_clusters=False, dedup_threshold=None)

    def picked(seed: int) -> list[str]:
        out = rerank({"g": _cands("g", rows)}, {"g": 5}, config, seed=seed)
        assert [c.tied for c in out if c.sample_id == "top"] == [0]
        assert all(c.tied == 19 and "tied with 19" in c.reason for c in out if c.sample_id != "top")
        return [c.sample_id for c in out if c.selected]

    first = picked(0)
    assert first[0] == "top" and first == picked(0), "the same seed: the same order"
    assert first[1:] != ["s00", "s01", "s02", "s03"], "ties are not handed out in id (file) order"
    assert picked(1) != first, "another seed: another draw among the tied"
