"""A tiny world for the loop tests: a small demo pool indexed in local Qdrant, a random tiny LLaVA
whose tokenizer knows the world's words, and a target task. Built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyWorld:
    pool: Path
    store: Path
    student: Path
    val: Path
    test: Path
    generic: Path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    from tutorloop.demo.build import build_world
    from tutorloop.demo.targets import target_texts
    from tutorloop.demo.world import vocabulary_texts
    from tutorloop.retrieval.embed import DEFAULT_EMBEDDER, load_embedder
    from tutorloop.retrieval.index import PoolIndex, index_pool
    from tutorloop.training.tiny import build_tiny_llava

    root = tmp_path_factory.mktemp("loop-world")
    world = build_world(root / "world", pool_size=300, n_val=12, n_test=12, n_generic_per_skill=1,
                        targets=["side-colour"], with_student=False, progress=False)
    student = build_tiny_llava(root / "student", vocabulary_texts() + target_texts(), seed=0)
    index = PoolIndex.open(store=root / "index")
    try:
        index_pool(world.pool, index=index, embedder=load_embedder(), embedder_name=DEFAULT_EMBEDDER,
                   image_root=world.image_root, clusters=4, progress=False)
    finally:
        index.close()
    val, test = world.targets["side-colour"]
    return TinyWorld(pool=world.pool, store=root / "index", student=student, val=val, test=test,
                     generic=world.generic)


@pytest.fixture(scope="session")
def scripted_openai():
    """tests/agents/scripted_openai.py (a real HTTP server on 127.0.0.1 standing in for vLLM), as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "loop_scripted_openai", Path(__file__).parents[1] / "agents" / "scripted_openai.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def loop_config():
    """``loop_config(world, out, **overrides)``: small everything — 2 rounds of 6 samples, one LoRA
    epoch, patience high enough that both rounds run."""
    from tutorloop.agents.config import RunConfig

    def make(world: TinyWorld, out: Path, **overrides) -> RunConfig:
        return RunConfig.model_validate({**_settings(world, out), **overrides})

    return make


def _settings(world: TinyWorld, out: Path) -> dict:
    return dict(
        student=world.student, val=world.val, test=world.test, generic=world.generic, store=world.store,
        out=out, budget=12, rounds=2, patience=5, eval_batch_size=16, max_new_tokens=4,
        rerank={"perturbation_draws": 1}, lora={"epochs": 1, "batch_size": 8},
        teacher={"progress": False}, known_share=0.0, known_on_top=False,  # known replay's tests set their own
    )
