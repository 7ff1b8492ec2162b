"""Trained ids are dropped from an over-fetched search, and filtered in the search only when they crowd it."""

from __future__ import annotations

from tutorloop.retrieval.index import OVERFETCH, OVERFETCH_SLACK, without_excluded

RANKED = [f"s{i:03d}" for i in range(300)]  # a collection, best first


def _search(calls: list):
    def search(k: int, ids: frozenset[str]) -> list[str]:
        calls.append((k, len(ids)))
        return [i for i in RANKED if i not in ids][:k]
    return search


def test_a_few_trained_ids_are_dropped_without_a_filter():
    calls: list = []
    found = without_excluded(_search(calls), 10, frozenset({"s001", "s004", "s250"}), key=str)
    assert found == [i for i in RANKED if i not in {"s001", "s004"}][:10]
    assert calls == [(OVERFETCH * 10 + OVERFETCH_SLACK, 0)], "one search, no id filter"


def test_a_crowded_neighbourhood_falls_back_to_the_filter():
    calls: list = []
    crowd = frozenset(RANKED[:60])
    found = without_excluded(_search(calls), 10, crowd, key=str)
    assert found == RANKED[60:70]
    assert calls == [(OVERFETCH * 10 + OVERFETCH_SLACK, 0), (10, 60)]


def test_a_small_collection_returns_what_it_has():
    calls: list = []
    small = _search(calls)
    found = without_excluded(lambda k, ids: small(k, ids)[:5], 10, frozenset({"s000"}), key=str)
    assert found == RANKED[1:5] and len(calls) == 1
