"""Trained ids are dropped from an over-fetched search, and filtered in the search only when they crowd it."""

from __future__ import annotations

from tutorloop.retrieval.index import OVERFETCH, OVERFETCH_SLACK, TIE_SLACK, tie_key, without_excluded

RANKED = [f"s{i:03d}" for i in range(300)]  # a collection, best first
SCORE = {sample_id: 1.0 - i / 1000 for i, sample_id in enumerate(RANKED)}  # no two equal


def _search(calls: list):
    def search(k: int, ids: frozenset[str]) -> list[str]:
        calls.append((k, len(ids)))
        return [i for i in RANKED if i not in ids][:k]
    return search


def test_a_few_trained_ids_are_dropped_without_a_filter():
    calls: list = []
    found = without_excluded(_search(calls), 10, frozenset({"s001", "s004", "s250"}), key=str, score=SCORE.get)
    assert found == [i for i in RANKED if i not in {"s001", "s004"}][:10]
    assert calls == [(OVERFETCH * 10 + OVERFETCH_SLACK, 0)], "one search, no id filter"


def test_a_crowded_neighbourhood_falls_back_to_the_filter():
    calls: list = []
    crowd = frozenset(RANKED[:60])
    found = without_excluded(_search(calls), 10, crowd, key=str, score=SCORE.get)
    assert found == RANKED[60:70]
    assert calls == [(OVERFETCH * 10 + OVERFETCH_SLACK, 0), (10 + TIE_SLACK, 60)]


def test_a_small_collection_returns_what_it_has():
    calls: list = []
    small = _search(calls)
    found = without_excluded(lambda k, ids: small(k, ids)[:5], 10, frozenset({"s000"}), key=str, score=SCORE.get)
    assert found == RANKED[1:5] and len(calls) == 1


def test_equal_scores_come_in_one_order_however_the_engine_stored_them():
    """A templated pool repeats one instruction (one vector) many times: which of the equals a search returns
    must not depend on the order the index was written in."""
    tied = [f"t{i:02d}" for i in range(100)]  # longer than a fetch (limit + TIE_SLACK): fetched again, longer
    scores = {i: 0.5 for i in tied}

    calls: list = []

    def stored_in(order):
        def search(k, ids):
            calls.append(k)
            return [i for i in order if i not in ids][:k]
        return search

    one = without_excluded(stored_in(tied), 5, frozenset(), key=str, score=scores.get)
    other = without_excluded(stored_in(tied[::-1]), 5, frozenset(), key=str, score=scores.get)
    assert one == other == sorted(tied, key=tie_key)[:5]
    assert one != tied[:5], "not the file order either"
    assert calls[:3] == [5 + TIE_SLACK, 2 * (5 + TIE_SLACK), 4 * (5 + TIE_SLACK)], "until the run of equals ends"
    excluded = frozenset(one[:2])  # the same with trained ids dropped
    assert without_excluded(stored_in(tied), 5, excluded, key=str, score=scores.get) == \
        without_excluded(stored_in(tied[::-1]), 5, excluded, key=str, score=scores.get)
