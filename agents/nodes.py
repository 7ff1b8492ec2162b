"""The loop's stages as LangGraph nodes: each reads and writes files of the run directory.

A node skips work whose artefact already exists, so a node re-run after a crash (LangGraph re-runs the
node that was interrupted) neither pays twice nor draws a different sample. The state holds only the
number of completed training rounds and the stop reason; everything else is a file.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np

from agents.planning import Gap, gaps_from_failures, plan_gaps
from agents.records import DiagnosisLog
from agents.retrieve import known_replay, random_selection, retrieve_candidates
from agents.run_dir import read_json, read_jsonl, write_json, write_jsonl
from agents.runtime import Runtime
from agents.teacher import diagnose_failures
from retrieval.dedup import dedup_vectors
from retrieval.ingest import load_samples
from retrieval.rerank import Candidate, ScoredCandidate, rerank
from training.evaluate import evaluate as evaluate_student
from training.lora import train_lora
from training.records import EvalRecord
from training.scores import perturbation_distance

log = logging.getLogger(__name__)


class LoopState(TypedDict):
    round: int  # training rounds completed
    stop_reason: str | None


def timed(stage: str, loop: Runtime, round_number: int, work: Callable[[], None]) -> None:
    """Run ``work`` and add its seconds to ``round_NN/seconds.json`` (one entry per stage)."""
    start = time.perf_counter()
    work()
    path = loop.run_dir.round(round_number) / "seconds.json"
    seconds = read_json(path) if path.exists() else {}
    seconds[stage] = round(time.perf_counter() - start, 3)
    write_json(path, seconds)


# --- evaluate -------------------------------------------------------------------------------------


def evaluate(state: LoopState, loop: Runtime) -> dict:
    number = state["round"]
    folder = loop.run_dir.round(number)
    if (folder / "metrics.json").exists():
        return {}
    config = loop.config
    student = loop.student(loop.adapter_of(number))
    metrics: dict = {"round": number}

    def work() -> None:
        for split, path, name in (("val", config.val, "eval"), ("test", config.test, "eval_test"),
                                  ("generic", config.generic, "eval_generic")):
            if path is None:
                continue
            root = config.image_root_of(path)
            result = evaluate_student(
                student, load_samples(path, root), root,
                matcher=config.matcher, batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens,
            )
            write_jsonl(folder / f"{name}.jsonl", result.records)
            metrics[f"{split}_accuracy"] = result.summary["accuracy"]
            metrics[f"{split}_by_source"] = result.summary["by_source"]

    timed("evaluate", loop, number, work)
    metrics["selected"] = len(read_jsonl(folder / "selected.jsonl"))
    metrics["seconds"] = read_json(folder / "seconds.json")
    write_json(folder / "metrics.json", metrics)  # written last: its presence means "round complete"
    return {}


# --- decide ---------------------------------------------------------------------------------------


def decide(state: LoopState, loop: Runtime) -> dict:
    """Stop when the target is met, the rounds or the budget are spent, or a round brought no gain."""
    config, number = loop.config, state["round"]
    history = [read_json(loop.run_dir.round(n) / "metrics.json") for n in range(number + 1)]
    val = [m["val_accuracy"] for m in history]
    reason = None
    if config.target_accuracy is not None and val[-1] >= config.target_accuracy:
        reason = f"target reached: val accuracy {val[-1]:.3f} >= {config.target_accuracy}"
    elif number >= config.rounds:
        reason = f"rounds spent ({config.rounds})"
    elif len(loop.run_dir.selected_ids(number)) >= config.budget:
        reason = f"budget spent ({config.budget} samples)"
    elif number >= config.patience and max(val[-config.patience:]) <= max(val[: -config.patience]):
        reason = f"no val gain for {config.patience} round(s)"
    elif number >= 1 and history[-1]["selected"] == 0:
        reason = "nothing left to select"
    write_summary(loop, history, reason)
    return {"stop_reason": reason}


def route_after_decide(state: LoopState) -> str:
    return "end" if state["stop_reason"] else "diagnose"


def write_summary(loop: Runtime, history: list[dict], stop_reason: str | None) -> None:
    keys = ("val_accuracy", "test_accuracy", "generic_accuracy")
    rounds = [{"round": m["round"], "selected": m["selected"], **{k: m.get(k) for k in keys},
               "seconds": m["seconds"]} for m in history[1:]]
    write_json(loop.run_dir.root / "summary.json", {
        "initial": {k: history[0].get(k) for k in keys},
        "rounds": rounds,
        "final": {**{k: history[-1].get(k) for k in keys}, "rounds": len(rounds),
                  "selected": sum(r["selected"] for r in rounds)},
        "stop_reason": stop_reason,
        "selector": loop.config.selector,
        "budget": loop.config.budget,
    })


# --- diagnose -------------------------------------------------------------------------------------


def diagnose(state: LoopState, loop: Runtime) -> dict:
    number = state["round"] + 1
    folder = loop.run_dir.round(number)
    if (folder / "gaps.json").exists():
        return {}
    config = loop.config
    failures = [EvalRecord.model_validate(r) for r in read_jsonl(loop.run_dir.round(number - 1) / "eval.jsonl")
                if not r["correct"]]
    budget = min(config.per_round_budget(number), config.budget - len(loop.run_dir.selected_ids(number - 1)))
    known = round(config.known_share * budget) if config.selector != "random" else 0
    gap_budget = budget - known

    def work() -> None:
        gaps: list[Gap] = []
        if config.selector == "teacher":
            asked = _sample(failures, config.max_diagnoses, seed=config.seed + number)
            # replies are cached in the run directory, so a resumed round does not pay for them twice
            teacher = config.teacher if config.teacher.cache_dir else config.teacher.model_copy(
                update={"cache_dir": loop.run_dir.root / "teacher_cache"})
            result = diagnose_failures(asked, config.image_root_of(config.val), teacher)
            write_jsonl(folder / "diagnoses.jsonl", result.logs)
            diagnosed = [row for row in result.logs if row.diagnosis]
            # the failed questions join the teacher's queries: a weak teacher's skill names alone can miss
            gaps = plan_gaps([row.diagnosis for row in diagnosed], gap_budget,
                             sample_ids=[row.sample_id for row in diagnosed],
                             questions=[row.question for row in diagnosed])
        elif config.selector == "failures":
            gaps = gaps_from_failures(failures, gap_budget)
            write_jsonl(folder / "diagnoses.jsonl", [DiagnosisLog.from_failure(r) for r in failures])
        write_json(folder / "gaps.json", {"budget": budget, "known": known, "gaps": [g.model_dump() for g in gaps]})

    timed("diagnose", loop, number, work)
    return {}


def _sample(records: list[EvalRecord], n: int, *, seed: int) -> list[EvalRecord]:
    if len(records) <= n:
        return records
    keep = sorted(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[i] for i in keep]


# --- retrieve -------------------------------------------------------------------------------------


def retrieve(state: LoopState, loop: Runtime) -> dict:
    number = state["round"] + 1
    folder = loop.run_dir.round(number)
    if (folder / "candidates.jsonl").exists() or loop.config.selector == "random":
        return {}
    gaps = [Gap.model_validate(g) for g in read_json(folder / "gaps.json")["gaps"]]
    exclude = frozenset(loop.run_dir.selected_ids(number - 1))

    def work() -> None:
        by_gap = retrieve_candidates(gaps, loop.pool_index(), loop.query_embedder(),
                                     factor=loop.config.candidates_factor, exclude=exclude)
        write_jsonl(folder / "candidates.jsonl", [c for cands in by_gap.values() for c in cands])

    timed("retrieve", loop, number, work)
    return {}


# --- rerank ---------------------------------------------------------------------------------------


def rerank_node(state: LoopState, loop: Runtime) -> dict:
    number = state["round"] + 1
    folder = loop.run_dir.round(number)
    if (folder / "selected.jsonl").exists():
        return {}
    config = loop.config
    plan = read_json(folder / "gaps.json")
    exclude = frozenset(loop.run_dir.selected_ids(number - 1))

    def work() -> None:
        if config.selector == "random":
            ids = random_selection(loop.pool_index().all_ids(), plan["budget"], seed=config.seed,
                                   round_number=number, exclude=exclude)
            scored = [ScoredCandidate(sample_id=i, gap="random", query="", relevance=0.0, score=0.0,
                                      selected=True, reason=f"uniform draw (seed {config.seed}, round {number})")
                      for i in ids]
        else:
            scored = _rerank_gaps(folder, plan, loop, number)
            scored += _known_draw(plan.get("known", 0), loop, number,
                                  exclude | {c.sample_id for c in scored if c.selected})
        write_jsonl(folder / "scored.jsonl", scored)
        chosen = [c for c in scored if c.selected]
        samples = loop.pool_index().fetch([c.sample_id for c in chosen])
        write_jsonl(folder / "selected.jsonl", [
            {**s.to_record(), "selection": c.model_dump(include={"gap", "query", "relevance", "perturbation",
                                                                   "cluster", "score", "reason"})}
            for s, c in zip(samples, chosen, strict=True)])
        _link_diagnoses_to_selection(folder, plan, chosen)

    timed("rerank", loop, number, work)
    return {}


def _rerank_gaps(folder: Path, plan: dict, loop: Runtime, number: int) -> list[ScoredCandidate]:
    candidates: dict[str, list[Candidate]] = {g["skill"]: [] for g in plan["gaps"]}
    for row in read_jsonl(folder / "candidates.jsonl"):
        candidates[row["gap"]].append(Candidate.model_validate(row))
    shares = {g["skill"]: g["budget"] for g in plan["gaps"]}
    config = loop.config

    def perturbation(ids):  # the student's score, asked only for the shortlist
        student = loop.student(loop.adapter_of(number - 1))
        samples = loop.pool_index().fetch(list(ids))
        return perturbation_distance(student, samples, loop.pool_image_root, n_words=config.rerank.perturbation_words,
                                     m=config.rerank.perturbation_draws, seed=config.seed + number)

    text_vectors = {c.sample_id: c.vector for cands in candidates.values() for c in cands}

    def near_duplicate_vectors(ids):  # text meaning + image look (retrieval/dedup.py)
        samples = loop.pool_index().fetch(list(ids))
        return dedup_vectors(samples, np.asarray([text_vectors[i] for i in ids]), loop.pool_image_root)

    return rerank(candidates, shares, config.rerank, perturbation, near_duplicate_vectors)


KNOWN_OVERDRAW = 4  # pool samples drawn per known sample wanted: the student answers only some of them right


def _known_draw(n: int, loop: Runtime, number: int, exclude: frozenset[str]) -> list[ScoredCandidate]:
    """The known share of the round: replay of skills the untouched student has (agents/retrieve.py)."""
    if n <= 0:
        return []
    seed, config = loop.config.seed, loop.config
    drawn = random_selection(loop.pool_index().all_ids(), KNOWN_OVERDRAW * n, seed=seed, round_number=number,
                             exclude=exclude)
    ids = known_replay(loop.student(None), loop.pool_index().fetch(drawn), loop.pool_image_root, n,
                       matcher=config.matcher, batch_size=config.eval_batch_size,
                       max_new_tokens=config.max_new_tokens)
    return [ScoredCandidate(sample_id=i, gap="known", query="", relevance=0.0, score=1.0, selected=True,
                            reason=f"replay: the untouched student answers it right ({len(ids)} of {len(drawn)} "
                                   f"drawn uniformly, seed {seed}, round {number}; {n} wanted)") for i in ids]


def _link_diagnoses_to_selection(folder: Path, plan: dict, chosen: list[ScoredCandidate]) -> None:
    """Each diagnosis row gets the ids of the samples its gap led to (for the reviewer)."""
    path = folder / "diagnoses.jsonl"
    if not path.exists():
        return
    gap_of = {sid: g["skill"] for g in plan["gaps"] for sid in g["sample_ids"]}
    picked: dict[str, list[str]] = {}
    for c in chosen:
        picked.setdefault(c.gap, []).append(c.sample_id)
    rows = read_jsonl(path)
    for row in rows:
        row["selected_ids"] = picked.get(gap_of.get(row["sample_id"], ""), [])
    write_jsonl(path, rows)


# --- train ----------------------------------------------------------------------------------------


def train(state: LoopState, loop: Runtime) -> dict:
    number = state["round"] + 1
    folder = loop.run_dir.round(number)
    adapter = folder / "adapter"
    if (adapter / "training.json").exists():
        return {"round": number}
    selected = read_jsonl(folder / "selected.jsonl")
    if not selected:
        log.warning("round %d selected nothing; the adapter is carried over unchanged", number)

    def work() -> None:
        from retrieval.records import Sample

        samples = [Sample.model_validate(r) for r in selected]
        replay = [Sample.model_validate(r) for n in range(1, number) for r in read_jsonl(loop.run_dir.round(n) / "selected.jsonl")]
        student = loop.student(loop.adapter_of(number - 1), trainable=True)
        staging = folder / "adapter.partial"
        shutil.rmtree(staging, ignore_errors=True)
        config = loop.config.lora.model_copy(update={"seed": loop.config.lora.seed + number})
        train_lora(student, samples, loop.pool_image_root, config, staging, replay=replay)
        shutil.rmtree(adapter, ignore_errors=True)
        staging.rename(adapter)  # the adapter appears whole or not at all
        loop._student = None  # the trained model is stale for every other key

    timed("train", loop, number, work)
    return {"round": number}
