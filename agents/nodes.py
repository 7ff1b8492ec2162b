"""The loop's nodes: each skips when its artefact exists, calls its stage, writes the artefact ("done" last).

LangGraph re-runs a node that was interrupted, so a node must be idempotent: a re-run neither pays twice
nor draws a different sample. The state holds the round being worked on and the stop reason; everything
else is a file of the run directory (agents/run_dir.py). ``round`` is the round a node belongs to:
evaluate measures the student after it (0: as given), plan/select/train build it, decide moves it on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TypedDict

from langgraph.types import interrupt

from tutorloop.agents.operating_point import measure_front
from tutorloop.agents.planning import GapPlan
from tutorloop.agents.probe import draw_probe
from tutorloop.agents.records import RoundMetrics, RunSummary, SelectedSample
from tutorloop.agents.retention import MAX_SHARE, MAX_SHARE_ON_TOP, KnownDraw, draw_known, replay_share
from tutorloop.agents.retrieve import random_selection
from tutorloop.agents.run_dir import (
    APPROVAL,
    CANDIDATES,
    DIAGNOSES,
    EVALS,
    FRONT,
    METRICS,
    PLAN,
    PREVIEW,
    PROBE,
    SCORED,
    SELECTED,
    RunDir,
)
from tutorloop.agents.runtime import Runtime
from tutorloop.agents.selectors import Choice, RoundContext, get_selector
from tutorloop.agents.stages import evaluate_splits, train_round
from tutorloop.retrieval.ingest import load_samples
from tutorloop.retrieval.rerank import ScoredCandidate
from tutorloop.training.evaluate import evaluate as evaluate_samples
from tutorloop.training.lora import Anchors, HeldOut
from tutorloop.training.student import Student, untouched

log = logging.getLogger(__name__)


class LoopState(TypedDict):
    round: int
    stop_reason: str | None


def _clock(loop: Runtime, number: int) -> Callable[[str], AbstractContextManager[None]]:
    """``with _clock(loop, n)("stage"):`` adds the block's seconds to round n's ``seconds.json``."""
    @contextmanager
    def clock(stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        loop.run_dir.add_seconds(number, stage, time.perf_counter() - start)

    return clock


def _context(loop: Runtime, number: int) -> RoundContext:
    # the probe measures forgetting: it is never selected, replayed or anchored
    exclude = frozenset(loop.run_dir.selected_ids(number - 1)) | loop.run_dir.probe_ids()
    return RoundContext(number=number, config=loop.config, services=loop, exclude=exclude,
                        clock=_clock(loop, number), teacher_cache=loop.run_dir.teacher_cache)


def _uses_probe(loop: Runtime) -> bool:
    return loop.config.generic is None and loop.config.probe_size > 0


def evaluate(state: LoopState, loop: Runtime) -> dict:
    number, run, config = state["round"], loop.run_dir, loop.config
    if run.has(number, METRICS):
        return {}
    student = loop.student(run.adapter(number))
    splits = {name: (path, config.image_root_of(path))
              for name, path in (("val", config.val), ("test", config.test), ("generic", config.generic)) if path}
    with _clock(loop, number)("evaluate"):
        if number == 0 and _uses_probe(loop) and not run.has(0, PROBE):
            probe = draw_probe(student, loop.pool_index(), loop.pool_image_root, config.probe_size, seed=config.seed,
                               matcher=config.matcher, batch_size=config.eval_batch_size,
                               max_new_tokens=config.max_new_tokens)
            log.info("%s", probe.reason(config.probe_size))
            run.write(0, PROBE, probe.samples)
        results = evaluate_splits(student, splits, matcher=config.matcher, batch_size=config.eval_batch_size,
                                  max_new_tokens=config.max_new_tokens)
        if _uses_probe(loop):
            results["probe"] = evaluate_samples(student, run.read(0, PROBE), loop.pool_image_root,
                                                matcher=config.matcher, batch_size=config.eval_batch_size,
                                                max_new_tokens=config.max_new_tokens, progress=False)
        for name, result in results.items():
            run.write(number, EVALS[name], result.records)
    loop.release_index()  # the probe was the only reader here
    per_split = {}
    for name, result in results.items():
        per_split[f"{name}_accuracy"] = result.summary["accuracy"]
        per_split[f"{name}_by_source"] = result.summary["by_source"]
    metrics = RoundMetrics(round=number, **per_split, selected=len(run.read(number, SELECTED)),
                           seconds=run.seconds(number))
    run.write(number, METRICS, _what_the_round_did(run, number, metrics) if number > 0 else metrics)
    return {}


def _what_the_round_did(run: RunDir, number: int, metrics: RoundMetrics) -> RoundMetrics:
    """A trained round's metrics with what it cost (forgetting since round 0), the operating point it kept, the
    plan's approval, what the teacher did with its failures and what the pool could not give."""
    before = run.read(0, METRICS).retention_accuracy
    front = run.read(number, FRONT) if run.has(number, FRONT) else None
    return metrics.model_copy(update={
        "forgetting": None if before is None or metrics.retention_accuracy is None
        else round(100 * (before - metrics.retention_accuracy), 3),
        "alpha": front.chosen if front else None,
        "kept_start": run.training(number).get("kept_start", False) or (front is not None and front.chosen == 0),
        "approval": run.read(number, APPROVAL).status if run.has(number, APPROVAL) else None,
        "diagnoses": _diagnosis_counts(run.read(number, PLAN).teacher if run.has(number, PLAN) else None),
        "short": _short(run, number)})


def _short(run: RunDir, number: int) -> int | None:
    """Samples the round's gaps asked for that the pool could not give (None when it gave them all)."""
    if not run.has(number, PLAN):
        return None
    bought = sum(row.why.gap != "known" for row in run.read(number, SELECTED))
    return max(0, run.read(number, PLAN).for_gaps - bought) or None


def _diagnosis_counts(teacher: dict | None) -> dict[str, int] | None:
    """What the teacher did with the round's failures: sent of all (the rest capped by max_diagnoses),
    diagnosed, rejected."""
    if not teacher or "sent" not in teacher:
        return None
    return {"failures": teacher["failures"], "sent": teacher["sent"], "not_sent": teacher["failures"] - teacher["sent"],
            "diagnosed": teacher.get("ok", 0), "rejected": teacher.get("rejected", 0)}


def decide(state: LoopState, loop: Runtime) -> dict:
    """Stop when the target is met, the rounds or the budget are spent, or a round brought no gain."""
    config, number, run = loop.config, state["round"], loop.run_dir
    history = [run.read(n, METRICS) for n in range(number + 1)]
    val = [m.val_accuracy for m in history]
    reason = None
    if config.target_accuracy is not None and val[-1] >= config.target_accuracy:
        reason = f"target reached: val accuracy {val[-1]:.3f} >= {config.target_accuracy}"
    elif number >= config.rounds:
        reason = f"rounds spent ({config.rounds})"
    elif _spent(loop, number) >= config.budget:
        reason = f"budget spent ({config.budget} samples)"
    elif number >= config.patience and max(val[-config.patience:]) <= max(val[: -config.patience]):
        reason = f"no val gain for {config.patience} round(s)"
    elif number >= 1 and history[-1].selected == 0:
        reason = "nothing left to select"
    run.write_summary(RunSummary.from_history(history, reason, config.selector, config.budget))
    return {"stop_reason": reason} if reason else {"stop_reason": None, "round": number + 1}


def route_after_decide(state: LoopState) -> str:
    return "end" if state["stop_reason"] else "plan"


def plan(state: LoopState, loop: Runtime) -> dict:
    """The round's budget, its known-replay share, and the selector's gaps (with any diagnoses)."""
    number, run, config = state["round"], loop.run_dir, loop.config
    if run.has(number, PLAN):
        return {}
    failures = [r for r in run.read(number - 1, EVALS["val"]) if not r.correct]
    budget = min(config.per_round_budget(number), config.budget - _spent(loop, number - 1))
    ctx = _context(loop, number)
    previous = run.read(number - 1, PLAN) if number > 1 else None
    share, share_why = replay_share(config.known_share, [run.read(n, METRICS) for n in range(number)],
                                    previous.known_share if previous else None,
                                    cap=MAX_SHARE_ON_TOP if config.known_on_top else MAX_SHARE)
    wanted = round(share * budget)
    known = _known(loop, ctx, wanted)
    # Within the budget, what replay could not fill goes to the gaps: the round spends its whole budget.
    gap_budget = budget if config.known_on_top else budget - len(known.ids)
    planned = get_selector(config.selector).plan(ctx, failures, gap_budget)
    if planned.diagnoses:
        run.write(number, DIAGNOSES, planned.diagnoses)
    reason = f"{share_why}; {known.reason(wanted, config.known_quantile)}" if known.drawn else share_why
    run.write(number, PLAN, GapPlan(budget=budget, known=len(known.ids), known_ids=known.ids, known_share=share,
                                    known_reason=reason, known_on_top=config.known_on_top, gaps=planned.gaps,
                                    teacher=planned.teacher))
    return {}


def _spent(loop: Runtime, upto: int) -> int:
    """Budget spent in rounds 1..upto: every sample selected, known replay left out when it comes on top."""
    run = loop.run_dir
    spent = len(run.selected_ids(upto))
    if loop.config.known_on_top:
        spent -= sum(run.read(n, PLAN).known for n in range(1, upto + 1) if run.has(n, PLAN))
    return spent


def _known(loop: Runtime, ctx: RoundContext, n: int) -> KnownDraw:
    if n <= 0:
        return KnownDraw([], 0, float("nan"))
    # The student of the last round with its adapter switched off: the base weights, not loaded again.
    with ctx.clock("replay"), untouched(loop.student(loop.run_dir.adapter(ctx.number - 1))) as base:
        return draw_known(base, loop.pool_index(), loop.pool_image_root, n, quantile=loop.config.known_quantile,
                          seed=loop.config.seed, round_number=ctx.number, exclude=ctx.exclude,
                          batch_size=loop.config.eval_batch_size)


def select(state: LoopState, loop: Runtime) -> dict:
    """The selector's choice plus the known-replay share; ``selected.jsonl`` is written last."""
    number, run, config = state["round"], loop.run_dir, loop.config
    if run.has(number, SELECTED):
        return {}
    gap_plan = run.read(number, PLAN)
    base = _context(loop, number)
    ctx = replace(base, exclude=base.exclude | set(gap_plan.known_ids))  # replay is drawn first (plan)
    if config.approve and not run.has(number, APPROVAL):
        _wait_for_approval(loop, number, ctx, gap_plan)
        gap_plan = run.read(number, PLAN)  # as the person left it
    if config.approve and run.read(number, APPROVAL).status == "approved":
        choice = Choice(scored=run.read(number, SCORED), candidates=run.read(number, CANDIDATES))  # as previewed
    else:
        choice = get_selector(config.selector).choose(ctx, gap_plan)
    scored = list(choice.scored) + [
        ScoredCandidate(sample_id=i, gap="known", query="", relevance=0.0, score=1.0, selected=True,
                        reason=gap_plan.known_reason) for i in gap_plan.known_ids]
    chosen = [c for c in scored if c.selected]
    bought = sum(c.gap != "known" for c in chosen)
    if bought < gap_plan.for_gaps:
        log.warning("round %d: %d of the %d samples the gaps asked for were left to select (the pool has no more "
                    "that were not trained on, probed or replayed)", number, bought, gap_plan.for_gaps)
    samples = loop.pool_index().fetch([c.sample_id for c in chosen])
    if config.export:  # selected.jsonl in the form the user's trainer takes, not the pool's own
        samples = [s.model_copy(update={"form": config.export}) for s in samples]
    if choice.candidates:
        run.write(number, CANDIDATES, choice.candidates)
    run.write(number, SCORED, scored)
    _link_diagnoses(loop, number, gap_plan, chosen)
    run.write(number, SELECTED, [SelectedSample(sample=s, why=c.why()) for s, c in zip(samples, chosen, strict=True)])
    return {}


def _wait_for_approval(loop: Runtime, number: int, ctx: RoundContext, gap_plan: GapPlan) -> None:
    """Preview what each gap would buy (scored candidates, nothing selected) and stop the graph until
    ``tutorloop approve`` records a decision; the resumed node finds ``approval.json`` and goes on."""
    run = loop.run_dir
    if not run.has(number, SCORED):
        preview = get_selector(loop.config.selector).choose(ctx, gap_plan)
        if preview.candidates:
            run.write(number, CANDIDATES, preview.candidates)
        # the samples themselves too, so a reviewer sees them without the store (another run may hold it)
        would_buy = preview.chosen
        samples = loop.pool_index().fetch([c.sample_id for c in would_buy])
        run.write(number, PREVIEW, [SelectedSample(sample=s, why=c.why()) for s, c in zip(samples, would_buy,
                                                                                              strict=True)])
        run.write(number, SCORED, list(preview.scored))  # last: the preview is complete once it exists
    loop.release_index()
    interrupt({"round": number, "waiting": "approval", "run": str(run.root)})  # a resume re-runs the node


def _link_diagnoses(loop: Runtime, number: int, gap_plan: GapPlan, chosen: list[ScoredCandidate]) -> None:
    """Each diagnosis row gets the ids of the samples its gap led to (for the reviewer)."""
    rows = loop.run_dir.read(number, DIAGNOSES)
    if not rows:
        return
    gap_of = {sid: gap.skill for gap in gap_plan.gaps for sid in gap.sample_ids}
    picked: dict[str, list[str]] = {}
    for c in chosen:
        picked.setdefault(c.gap, []).append(c.sample_id)
    for row in rows:
        row.selected_ids = picked.get(gap_of.get(row.sample_id, ""), [])
    loop.run_dir.write(number, DIAGNOSES, rows)


def train(state: LoopState, loop: Runtime) -> dict:
    number, run, config = state["round"], loop.run_dir, loop.config
    if run.has_adapter(number):
        return {}
    selected = [row.sample for row in run.read(number, SELECTED)]
    if not selected:
        log.warning("round %d selected nothing; the adapter is carried over unchanged", number)
    replay = [row.sample for n in range(1, number) for row in run.read(n, SELECTED)]
    student = loop.trainable_student(run.adapter(number - 1))
    # the target's val split tells a round when to stop (lora.early_stop) and which operating point to keep; it is
    # never trained on
    val = HeldOut(load_samples(config.val, config.image_root_of(config.val)), config.image_root_of(config.val))
    held_out = val if config.lora.early_stop else None
    with _clock(loop, number)("train"):
        anchors = _anchors(loop, number) if config.lora.anchor_weight > 0 else None
        finish = _operating_point(loop, number, val) if config.operating_points and selected else None
        image_root = loop.pool_image_root
        loop.release_index()  # training reads no index: another run may use the store meanwhile
        train_round(student, selected, replay, image_root,
                    config.lora.model_copy(update={"seed": config.lora.seed + number}), run.adapter(number),
                    held_out=held_out, anchors=anchors, finish=finish)
    return {}


def _operating_point(loop: Runtime, number: int, val: HeldOut) -> Callable[[Student, dict], None]:
    """What runs after the round trains: measure the front between its start and its end on the target ``val``
    split and the retention split, keep the chosen point in the student, write ``front.json``."""
    run, config = loop.run_dir, loop.config
    retention_split, retention = None, None
    if config.generic is not None:
        root = config.image_root_of(config.generic)
        retention_split, retention = "generic", HeldOut(load_samples(config.generic, root), root)
    elif _uses_probe(loop) and run.read(0, PROBE):
        retention_split, retention = "probe", HeldOut(run.read(0, PROBE), loop.pool_image_root)

    def accuracy(student: Student, split: HeldOut) -> float:
        return evaluate_samples(student, list(split.samples), split.image_root, matcher=config.matcher,
                                batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens,
                                progress=False).summary["accuracy"]

    def measure(student: Student) -> tuple[float, float | None]:
        return accuracy(student, val), accuracy(student, retention) if retention else None

    def finish(student: Student, start: dict) -> None:
        first, last = run.read(0, METRICS), run.read(number - 1, METRICS)
        bound = config.max_forgetting if retention else None
        front = measure_front(student, start, number=number, alphas=config.operating_points,
                              measured_start=(last.val_accuracy or 0.0, last.retention_accuracy), measure=measure,
                              retention_before=first.retention_accuracy, max_forgetting=bound,
                              retention_split=retention_split)
        log.info("round %d operating point: %s (%.1f s)", number, front.reason, front.seconds)
        run.write(number, FRONT, front)
        run.add_seconds(number, "operating_point", front.seconds)

    return finish


def _anchors(loop: Runtime, number: int) -> Anchors:
    """The round's anchors: a uniform draw of the pool samples not trained on, outside the clusters the round's
    gaps selected from. Uniform, so the student's behaviour is kept in proportion to what the pool asks, known
    skills and half-known ones alike; not where the round teaches, whose untouched answers it sets out to change
    (anchored there, the side-colour rounds learnt 10 points less)."""
    index, run = loop.pool_index(), loop.run_dir
    taught = {row.why.cluster for row in run.read(number, SELECTED) if row.why.gap != "known"} - {None}
    near = {i for cluster in sorted(taught) for i in index.cluster_vectors(cluster)[0]}
    ids = random_selection(index.all_ids(), loop.config.lora.anchor_samples, seed=loop.config.seed,
                           round_number=number, exclude=frozenset(run.selected_ids(number)) | near | run.probe_ids())
    return Anchors(index.fetch(ids), loop.pool_image_root)
