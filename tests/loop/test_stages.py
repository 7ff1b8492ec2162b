"""Each stage called alone, as a notebook would: a tiny student, the embedded index, no run directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tutorloop.agents.planning import GapPlan, gaps_from_failures
from tutorloop.agents.retrieve import retrieve_candidates
from tutorloop.agents.run_dir import RunDir
from tutorloop.agents.runtime import Runtime
from tutorloop.agents.selectors import SELECTORS, RoundContext
from tutorloop.agents.selectors.random_draw import uniform_choice
from tutorloop.agents.selectors.teacher import diagnose_into_gaps, sample_failures
from tutorloop.agents.stages import evaluate_splits, rerank_for_student, train_round
from tutorloop.retrieval.embed import load_embedder
from tutorloop.retrieval.index import PoolIndex
from tutorloop.retrieval.ingest import load_samples
from tutorloop.retrieval.rerank import RerankConfig
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.student import load_student


@pytest.fixture(scope="module")
def index(tiny_world):
    opened = PoolIndex.open(store=tiny_world.store)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def student(tiny_world):
    return load_student(tiny_world.student, device="cpu")


@pytest.fixture(scope="module")
def failures(tiny_world, student):
    root = tiny_world.val.parent
    results = evaluate_splits(student, {"val": (tiny_world.val, root)}, matcher="vqa", batch_size=8, max_new_tokens=4)
    return [r for r in results["val"].records if not r.correct]


def test_evaluate_splits_gives_one_record_per_sample_per_split(tiny_world, student):
    splits = {"val": (tiny_world.val, tiny_world.val.parent), "generic": (tiny_world.generic, tiny_world.generic.parent)}
    results = evaluate_splits(student, splits, matcher="vqa", batch_size=8, max_new_tokens=4)
    assert list(results) == ["val", "generic"]
    for name, (path, root) in splits.items():
        assert [r.id for r in results[name].records] == [s.id for s in load_samples(path, root)]
        assert results[name].summary["n"] == len(results[name].records)


def test_teacher_diagnoses_become_gaps_sharing_the_budget(tiny_world, failures, scripted_openai):
    from tutorloop.agents.teacher_config import TeacherConfig

    asked = sample_failures(failures, 4, seed=1)
    assert len(asked) == min(4, len(failures)) and asked == sample_failures(failures, 4, seed=1)
    with scripted_openai.ScriptedOpenAI() as server:
        planned = diagnose_into_gaps(asked, 10, TeacherConfig(base_url=server.base_url, dialect="json_schema",
                                                              progress=False), tiny_world.val.parent)
    assert [row.sample_id for row in planned.diagnoses] == [r.id for r in asked]
    assert sum(g.budget for g in planned.gaps) == 10
    assert {sid for g in planned.gaps for sid in g.sample_ids} == {r.id for r in asked}


def test_retrieval_then_rerank_for_the_student_fills_each_share(index, student, failures):
    gaps = gaps_from_failures(failures, 6)
    by_gap = retrieve_candidates(gaps, index, load_embedder(), factor=4, exclude=frozenset())
    shares = {g.skill: g.budget for g in gaps}
    config = RerankConfig(scorer="perturbation", perturbation_draws=1)
    scored = rerank_for_student(by_gap, shares, config, lambda: student, index,
                                Path(index.manifest.image_root), seed=0)
    chosen = [c for c in scored if c.selected]
    assert len(chosen) == 6 and len({c.sample_id for c in chosen}) == 6
    assert all(c.perturbation is not None for c in chosen), "the student's score reached the re-rank"
    assert all(c.reason for c in scored)


def test_uniform_choice_is_seeded_and_leaves_out_what_was_trained(index):
    ids = index.all_ids()
    first = uniform_choice(ids, 5, seed=3, round_number=1, exclude=frozenset(ids[:10]))
    assert [c.sample_id for c in first] == [c.sample_id for c in uniform_choice(ids, 5, seed=3, round_number=1,
                                                                                 exclude=frozenset(ids[:10]))]
    assert len(first) == 5 and not {c.sample_id for c in first} & set(ids[:10])
    assert {c.sample_id for c in first} != {c.sample_id for c in uniform_choice(ids, 5, seed=3, round_number=2,
                                                                                exclude=frozenset())}


def test_a_selector_chooses_without_writing_a_run_directory(tiny_world, loop_config, index, failures, tmp_path):
    config = loop_config(tiny_world, tmp_path / "never-written", selector="failures")
    services = Runtime(config=config, run_dir=RunDir(config.out), index=index)
    ctx = RoundContext(number=1, config=config, services=services, exclude=frozenset(),
                       clock=lambda stage: contextlib.nullcontext())
    selector = SELECTORS["failures"]
    planned = selector.plan(ctx, failures, 6)
    choice = selector.choose(ctx, GapPlan(budget=6, gaps=planned.gaps))
    assert len(choice.chosen) == 6 and choice.candidates
    assert not config.out.exists()


def test_train_round_leaves_a_whole_adapter_and_no_staging(tiny_world, tmp_path):
    samples = load_samples(tiny_world.val, tiny_world.val.parent)[:4]
    student = load_student(tiny_world.student, device="cpu", is_trainable=True)
    adapter = tmp_path / "adapter"
    report = train_round(student, samples, [], tiny_world.val.parent, LoraTrainConfig(epochs=1, batch_size=4), adapter)
    assert report.n_selected == 4 and (adapter / "training.json").exists() and (adapter / "adapter_config.json").exists()
    assert not (tmp_path / "adapter.partial").exists()
