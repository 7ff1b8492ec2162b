"""The scorers in the loop: the re-rank for a tiny student with the entropy rule (each selected sample says
which scorer chose it; a second re-rank of the round with the same cache runs no forward), and the scorer
recorded in a run's selected.jsonl as a LLaVA-style trainer reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorloop.agents.api import run
from tutorloop.agents.planning import gaps_from_failures
from tutorloop.agents.retrieve import retrieve_candidates
from tutorloop.agents.run_dir import SELECTED, RunDir
from tutorloop.agents.stages import rerank_for_student
from tutorloop.retrieval.embed import load_embedder
from tutorloop.retrieval.index import PoolIndex
from tutorloop.retrieval.ingest import load_samples
from tutorloop.retrieval.rerank import RerankConfig
from tutorloop.training.evaluate import evaluate
from tutorloop.training.scorers import SCORERS, ScoreCache
from tutorloop.training.student import load_student


@pytest.fixture
def round_inputs(tiny_world):  # the embedded store admits one handle at a time: closed before the loop test
    index = PoolIndex.open(store=tiny_world.store)
    student = load_student(tiny_world.student, device="cpu")
    root = tiny_world.val.parent
    failures = [r for r in evaluate(student, load_samples(tiny_world.val, root), root, max_new_tokens=4).records
                if not r.correct]
    gaps = gaps_from_failures(failures, 6)
    candidates = retrieve_candidates(gaps, index, load_embedder(), factor=4, exclude=frozenset())
    yield index, student, candidates, {g.skill: g.budget for g in gaps}
    index.close()


def test_entropy_rule_in_the_rerank_records_the_chosen_scorer_and_caches(round_inputs):
    index, student, candidates, shares = round_inputs
    calls = []
    handle = student.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        cache = ScoreCache()
        config = RerankConfig(scorer="entropy", perturbation_draws=1)
        scored = rerank_for_student(candidates, shares, config, lambda: student, index,
                                    Path(index.manifest.image_root), seed=0, cache=cache)
        first = len(calls)
        again = rerank_for_student(candidates, shares, config, lambda: student, index,
                                   Path(index.manifest.image_root), seed=0, cache=cache)
    finally:
        handle.remove()
    assert first > 0 and len(calls) == first, "the second re-rank of the round ran a forward"
    assert [c.model_dump() for c in again] == [c.model_dump() for c in scored]
    chosen = [c for c in scored if c.selected]
    assert len(chosen) == 6 and all(c.scorer in SCORERS for c in chosen)
    ranked = [c for c in scored if c.scorer is not None]  # the dropped near-duplicates are not ranked
    assert all(set(c.scores) == set(SCORERS) for c in ranked)
    by_cluster = {}
    for c in ranked:
        by_cluster.setdefault(c.cluster, set()).add(c.scorer)
    assert all(len(names) == 1 for names in by_cluster.values()), "one scorer per cluster"
    # one forward pass per distinct shortlisted sample and pass: 3 passes (perturbation, answer, text only)
    shortlist = {c.sample_id for c in ranked}
    assert cache.forwarded == {"perturbation": len(shortlist), "answer": len(shortlist),
                               "answer_text_only": len(shortlist)}


def test_the_chosen_scorer_reaches_selected_jsonl(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", rounds=1, budget=6,
                         rerank={"perturbation_draws": 1, "scorer": "el2n"})
    run(config, run_id="scorer-el2n")
    path = RunDir(config.out).path(1, SELECTED)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6 and {r["selection"]["scorer"] for r in rows} == {"el2n"}
    assert all(set(r["selection"]["scores"]) == {"el2n"} and "el2n " in r["selection"]["reason"] for r in rows)
    assert all("conversations" in r for r in rows)  # still the pool's own LLaVA form
