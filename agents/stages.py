"""The loop's stages as plain functions: inputs as arguments, records as results, no run directory.

The nodes (agents/nodes.py) call these and write what they return; a notebook or a test can call them
directly with a tiny student and an embedded index. Selection itself (plan and choose) is the selectors'
(agents/selectors/); the functions here are the stages around it and the parts selectors share.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tutorloop.retrieval.dedup import dedup_vectors
from tutorloop.retrieval.index import PoolIndex
from tutorloop.retrieval.ingest import load_samples
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import Candidate, RerankConfig, ScoredCandidate, StudentScores, rerank
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.evaluate import EvalResult, evaluate
from tutorloop.training.lora import Anchors, HeldOut, TrainReport, train_lora
from tutorloop.training.scorers import SCORERS, ScoreCache, ScoreSettings, ScoringSession
from tutorloop.training.student import Student


def evaluate_splits(student: Student, splits: Mapping[str, tuple[Path, Path]], *, matcher: str, batch_size: int,
                    max_new_tokens: int) -> dict[str, EvalResult]:
    """``splits``: name -> (data file, image root). The student's result on each, in the given order."""
    return {name: evaluate(student, load_samples(path, root), root, matcher=matcher, batch_size=batch_size,
                           max_new_tokens=max_new_tokens)
            for name, (path, root) in splits.items()}


def rerank_for_student(candidates: dict[str, list[Candidate]], shares: dict[str, int], config: RerankConfig,
                       student: Callable[[], Student], index: PoolIndex, image_root: Path | None, *,
                       seed: int, cache: ScoreCache | None = None) -> list[ScoredCandidate]:
    """The re-rank (retrieval/rerank.py) with the student-side scorers (training/scorers.py, by the name or
    rule ``config.scorer`` gives) and text+image de-dup.

    ``student`` is called only when a score is not cached yet, and only for the shortlist. ``cache`` (one
    per round unless given) keeps every pass's values per sample and adapter, so scorers sharing a pass
    and the entropy rule's second look cost no extra forward."""
    settings = ScoreSettings(perturbation_words=config.perturbation_words,
                             perturbation_draws=config.perturbation_draws, seed=seed)
    session = ScoringSession(student, lambda ids: index.fetch(list(ids)), image_root, settings,
                             cache if cache is not None else ScoreCache())
    scorers = StudentScores(tuple(SCORERS), session.score)

    text_vectors = {c.sample_id: c.vector for cands in candidates.values() for c in cands}

    def near_duplicate_vectors(ids: Sequence[str]) -> np.ndarray:  # text meaning + image look (retrieval/dedup.py)
        return dedup_vectors(index.fetch(list(ids)), np.asarray([text_vectors[i] for i in ids]), image_root)

    return rerank(candidates, shares, config, scorers, near_duplicate_vectors, seed=seed)


def train_round(student: Student, selected: Sequence[Sample], replay: Sequence[Sample], image_root: Path | None,
                config: LoraTrainConfig, adapter: Path, *, held_out: HeldOut | None = None,
                anchors: Anchors | None = None, finish: Callable[[Student, dict], None] | None = None) -> TrainReport:
    """LoRA-train on the round's samples (+ replay of earlier rounds); the adapter appears whole or not at all.
    ``finish``: what runs on the trained student before it is saved (the loop's operating point)."""
    staging = adapter.with_name(adapter.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    report = train_lora(student, selected, image_root, config, staging, replay=replay, held_out=held_out,
                        anchors=anchors, finish=finish)
    shutil.rmtree(adapter, ignore_errors=True)
    staging.rename(adapter)
    return report
