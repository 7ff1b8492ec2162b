"""The selection benchmark: every strategy side by side at equal budget, with its cost.

For one or more demo target tasks, budgets (fractions of the pool) and seeds, runs the loop
(`agents.api.run`) with each strategy and records target test accuracy, generic-skill accuracy
(forgetting against the zero-shot student), what was selected (skill mix, noise share) and wall-clock
seconds split into selection (diagnose + retrieve + rerank + draw + replay: teacher, embedding, retrieval,
scoring, uniform draws, known-skill replay) and
training. Rows:

- ``zero-shot``: the student as given (round 0 of the runs);
- ``random``, ``failures``, ``teacher`` (free diagnosis, no skill map) at every budget;
- ``teacher-map``: the same teacher, its diagnoses grounded in the pool's skill map (agents/skills.py),
  which that teacher named (built once per pool into a copy of the index; its cost amortised per run);
  ``teacher-map-top3``: the same, choosing among the 3 map skills nearest the failure (not 24);
  ``teacher-tagmap-top3``: that, on a map named by the pool's own ``source`` tags (no naming calls);
- ``oracle-map``: the oracle teacher (demo/oracle_teacher.py: the world's ground truth behind the OpenAI
  API) on a map it named — labelled "oracle (upper bound)" everywhere: the method with a perfect teacher,
  never the product's result;
- teacher ablations: ``teacher-no-perturbation``, ``teacher-no-clusters``, ``teacher-no-replay``;
- ``failures-known``, ``teacher-known``, ``oracle-map-known``: the same with known-skill replay (``known_share`` =
  KNOWN_SHARE in round 1, then following the measured forgetting: agents/retention.py);
- ``full-pool``: one LoRA run over every accepted pool sample (policy in ``FULL_POOL_POLICY``);
- ``target-data`` (``--target-data``): the student's ceiling at a budget — one LoRA run on that many fresh
  samples of the target's own skill and wording, which no pool holds (``TARGET_DATA_POLICY``). A selection
  near it has found what the student can use; a target far above it is beyond the student, not the selection.

Besides accuracy, each teacher row reports how often the diagnosed skill is right: the share of its
diagnosed failures whose (heaviest) skill is one the failure needs — the world knows: the question's world
skill and its parts (``Skill.taught_by``); a map skill stands for the world skill most of its points ask,
a free skill name must be that skill's own name.

Every run has its own folder under ``--out`` and is reused when complete, so an interrupted benchmark
continues where it stopped; ``--out`` can be extended with more seeds or budgets later. Writes
``selection-<task>.json``, ``.md`` (mean ± sample standard deviation over seeds) and ``.png`` into
``--results``.

    .venv/bin/python benchmarks/selection.py --target side-colour --budgets 0.02,0.05,0.1 --seeds 0,1,2
    .venv/bin/python benchmarks/selection.py --target side-colour,corner-colour --budgets 0.02,0.05,0.1 \
        --seeds 0,1,2 --strategies random,failures,teacher,teacher-map,oracle-map   # the teacher and skill-map grid
    .venv/bin/python benchmarks/selection.py --quick --out /tmp/sel --results /tmp/sel/results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tutorloop.agents.run_dir import DIAGNOSES, SELECTED, RunDir  # noqa: E402  (after the sys.path line above)
from tutorloop.agents.run_dir import METRICS as METRICS_FILE  # noqa: E402

log = logging.getLogger("benchmarks.selection")
# Seconds of a round that are not selection; every other stage a selector timed is (diagnose, retrieve,
# rerank, draw, replay).
NOT_SELECTION = ("train", "evaluate")
SELECTION_STAGES = ("diagnose", "retrieve", "rerank", "draw", "replay")
ROUND_STAGES = (*SELECTION_STAGES, *NOT_SELECTION)

FULL_POOL_POLICY = (
    "full-pool: one LoRA run over every accepted pool sample (noise included, as a user without selection "
    "would train), with the loop's per-round LoRA settings (same epochs, batch size, lr, rank, seed as the "
    "loop's round 1); no replay (nothing earlier to replay); evaluated once after training."
)
TARGET_DATA_POLICY = (
    "target-data (ceiling): one LoRA run on budget-many fresh samples of the target's own skill and wording "
    "(not in the pool), with the loop's round recipe (epochs, held-out stop, batch size; round 1's seed); "
    "evaluated once. Not a selection: what the student reaches when every sample is the target itself."
)
FINAL_POLICY = "strategy rows report the evaluation after the loop's last round (the adapter a user gets)."


@dataclass(frozen=True)
class Strategy:
    name: str
    selector: str
    rerank: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # top-level RunConfig fields
    teacher: str = "model"  # "model": the CPU teacher or --teacher; "oracle": demo/oracle_teacher.py
    skill_map: bool = False  # diagnoses grounded in a skill map this strategy's teacher named
    teacher_settings: dict = field(default_factory=dict)  # TeacherConfig fields over the endpoint's
    map_names: str | None = None  # the map's clusters named by this pool tag (e.g. source), not by the teacher

    @property
    def needs_teacher(self) -> bool:
        return self.selector == "teacher"

    @property
    def needs_model_teacher(self) -> bool:
        return self.needs_teacher and self.teacher == "model"

    @property
    def map_kind(self) -> str:
        """Whose names the strategy's skill map carries: a teacher kind, or ``tag-<field>``."""
        return f"tag-{self.map_names}" if self.map_names else self.teacher

    @property
    def label(self) -> str:
        return f"{self.name} — {ORACLE_LABEL}" if self.teacher == "oracle" else self.name


KNOWN_SHARE = 0.3  # "-known": this share of round 1 replays samples the untouched student knows (agents/retention.py)
ORACLE_LABEL = "oracle (upper bound)"
STRATEGIES: tuple[Strategy, ...] = (
    Strategy("random", "random"),
    Strategy("failures", "failures"),
    Strategy("teacher", "teacher"),
    Strategy("teacher-map", "teacher", skill_map=True),
    # a weak teacher chooses among the 3 map skills nearest the failure instead of 24 (SmolLM2 on 24 chose
    # the same off-target skill for every failure: README "The teacher and the skill map")
    Strategy("teacher-map-top3", "teacher", skill_map=True, teacher_settings={"map_skills_shown": 3}),
    # the same on a map named by the pool's own source tags (no naming calls): what the demo runs
    Strategy("teacher-tagmap-top3", "teacher", skill_map=True, teacher_settings={"map_skills_shown": 3},
             map_names="source"),
    Strategy("oracle-map", "teacher", teacher="oracle", skill_map=True),
    Strategy("teacher-no-perturbation", "teacher", rerank={"use_perturbation": False}),
    Strategy("teacher-no-clusters", "teacher", rerank={"use_clusters": False}),
    Strategy("teacher-no-replay", "teacher", lora={"replay_ratio": 0.0}),
    Strategy("failures-known", "failures", run={"known_share": KNOWN_SHARE}),
    Strategy("teacher-known", "teacher", run={"known_share": KNOWN_SHARE}),
    Strategy("oracle-map-known", "teacher", teacher="oracle", skill_map=True, run={"known_share": KNOWN_SHARE}),
)
ROW_ORDER = ("zero-shot", *(s.name for s in STRATEGIES), "target-data", "full-pool")


def scorer_strategies(names: str | None, selector: str) -> list[Strategy]:
    """``--scorers a,b``: one row per student-side scorer (or rule: entropy, none) of training/scorers.py,
    named ``<selector>-scorer-<name>``, otherwise the selector's default settings."""
    from tutorloop.training.scorers import scorer_choices

    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    unknown = set(wanted) - set(scorer_choices())
    if unknown:
        raise SystemExit(f"--scorers: unknown {sorted(unknown)}; known: {scorer_choices()}")
    return [Strategy(f"{selector}-scorer-{name}", selector, rerank={"scorer": name}) for name in wanted]


def flag_values(text: str | None, flag: str, valid: Callable[[float], bool], rule: str) -> list[float]:
    """The comma-separated numbers of ``flag``; a bad one or one outside ``valid`` stops the benchmark."""
    try:
        wanted = [float(x) for x in (text or "").split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"{flag}: {exc}") from None
    if not all(valid(x) for x in wanted):
        raise SystemExit(f"{flag}: {rule}, got {wanted}")
    return wanted


def share_strategies(shares: str | None, selector: str) -> list[Strategy]:
    """``--known-shares 0.15,0.5``: one row per known-replay share (the trade-off curve of replay share vs
    target vs forgetting), named ``<selector>-known-<share>``."""
    wanted = flag_values(shares, "--known-shares", lambda x: 0 <= x < 1, "each share must be in [0, 1)")
    return [Strategy(f"{selector}-known-{x:g}", selector, run={"known_share": x}) for x in wanted]


def anchor_strategies(weights: str | None, selector: str) -> list[Strategy]:
    """``--anchor-weights 1,3``: one row per anchor weight (training/lora.py ``Anchors``) on top of the known
    share of the ``-known`` rows, named ``<selector>-known-anchor<w>`` (the ``-known`` row is weight 0)."""
    wanted = flag_values(weights, "--anchor-weights", lambda x: x > 0, "each weight must be > 0")
    return [Strategy(f"{selector}-known-anchor{x:g}", selector, run={"known_share": KNOWN_SHARE},
                     lora={"anchor_weight": x}) for x in wanted]


@dataclass
class Settings:
    """What every run of one benchmark shares (stored in the JSON)."""

    pool_size: int
    n_val: int
    n_test: int
    n_generic_per_skill: int
    rounds: int
    epochs: int
    batch_size: int
    max_diagnoses: int
    eval_batch_size: int
    max_new_tokens: int
    perturbation_draws: int
    quick: bool
    # pinned, not the product's defaults: the committed rows were made with them (README, "Selection benchmark")
    early_stop: bool = False  # True: each round's epochs end on the val split's answer loss (lora.early_stop)
    scorer: str = "perturbation"  # the re-rank scorer of every row but the --scorers ones


# --- running ---------------------------------------------------------------------------------------


@dataclass
class World:
    task: str
    student: Path
    val: Path
    test: Path
    generic: Path
    pool: Path
    image_root: Path
    store: Path
    pool_count: int
    target_sources: tuple[str, ...]
    root: Path = Path(".")


def prepare_world(task: str, args: argparse.Namespace, settings: Settings) -> World:
    """The demo world (pool, target splits, generic set), its index and the student; built once, cached."""
    from tutorloop.demo.build import build_world
    from tutorloop.demo.targets import TARGETS
    from tutorloop.demo.world import SKILLS

    root = args.world or args.out / "world"
    quick_student = settings.quick and args.student is None
    world = build_world(root, pool_size=settings.pool_size, seed=args.world_seed, targets=[task],
                        n_val=settings.n_val, n_test=settings.n_test,
                        n_generic_per_skill=settings.n_generic_per_skill,
                        with_student=args.student is None and not quick_student, progress=not settings.quick)
    student = args.student or world.student
    if quick_student:  # CI: a random tiny LLaVA (seconds) instead of the pre-trained demo student (minutes)
        from tutorloop.demo.targets import target_texts
        from tutorloop.demo.world import vocabulary_texts
        from tutorloop.training.tiny import build_tiny_llava

        student = root / "tiny-student"
        if not (student / "config.json").exists():
            build_tiny_llava(student, vocabulary_texts() + target_texts(), seed=0)
    # on target = the pool skills that teach the target (a composite target's parts: the pool never asks it)
    sources = tuple(sorted({SKILLS[p].source for s in TARGETS[task].skills for p in SKILLS[s].taught_by}))
    return indexed_world(task, world, Path(student), sources, root)


def indexed_world(task: str, paths: Any, student: Path, sources: tuple[str, ...], root: Path) -> World:
    """A world's files (demo.build.WorldPaths) with its pool indexed once into ``root/index``."""
    from tutorloop.agents import api
    from tutorloop.retrieval.index import PoolIndex

    store = api.ensure_index(api.IndexConfig(pool=paths.pool, image_root=paths.image_root, store=root / "index"), rebuild=True)
    index = PoolIndex.open_when_free(600.0, store=store)  # another benchmark process may be reading it
    try:
        count = index.count()
    finally:
        index.close()
    val, test = paths.targets[task]
    return World(task, student, val, test, paths.generic, paths.pool, paths.image_root, store, count, sources, root)


def check_same_world(task_dir: Path, world: World, root: Path) -> None:
    """Refuse to mix runs made on different worlds or students (demo code may change between calls)."""
    manifest = json.loads((root / "manifest.json").read_text())
    snapshot = {"student": str(world.student), "pool_count": world.pool_count,
                "parts": {k: v for k, v in manifest.items() if k in {"pool", "generic", f"target:{world.task}"}}}
    path = task_dir / "world.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != snapshot:
            raise SystemExit(f"{path}: the runs under {task_dir} were made on another world or student "
                             f"({before} != {snapshot}); use a new --out, or pass the same --student")
        return
    task_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(snapshot, indent=2) + "\n")


def budget_samples(fraction: float, pool_count: int) -> int:
    return max(1, round(fraction * pool_count))


def run_config(world: World, strategy: Strategy, fraction: float, seed: int, out: Path, settings: Settings,
               teacher: dict | None, store: Path | None = None):
    from tutorloop.agents.config import RunConfig

    if strategy.needs_teacher:  # say which: the map strategies' stores hold one, the others' do not
        teacher = {**(teacher or {}), **strategy.teacher_settings,
                   "skill_map": "auto" if strategy.skill_map else "off"}
    settings_of_run = dict(
        student=world.student, val=world.val, test=world.test, generic=world.generic, store=store or world.store,
        out=out, budget=budget_samples(fraction, world.pool_count), rounds=settings.rounds,
        patience=settings.rounds,  # no early stop: every strategy spends its whole budget
        selector=strategy.selector, seed=seed, max_diagnoses=settings.max_diagnoses,
        eval_batch_size=settings.eval_batch_size, max_new_tokens=settings.max_new_tokens,
        teacher=teacher or {"progress": False},
        rerank={"perturbation_draws": settings.perturbation_draws, "scorer": settings.scorer, **strategy.rerank},
        lora={"epochs": settings.epochs, "early_stop": settings.early_stop, "batch_size": settings.batch_size,
              "seed": seed, "anchor_weight": 0.0, **strategy.lora},  # anchors pinned off: the -anchor rows set theirs
    )
    # known_share pinned to the committed rows' 0 (the -known strategies set theirs in strategy.run), and the
    # trained adapter kept whole (no operating point) unless a strategy asks for one
    return RunConfig.model_validate({**settings_of_run, "known_share": 0.0, "known_on_top": False,
                                     "operating_points": [], "max_forgetting": None, **strategy.run})


def run_complete(out: Path) -> bool:
    run = RunDir(out)
    return run.has_summary() and run.read_summary().stop_reason is not None


def seed_round_zero(out: Path, zero_shot: Path) -> None:
    """Round 0 (the untouched student's evaluation) is the same for every run of a task: copy it, do not
    recompute it. The loop's evaluate node skips a round whose metrics exist. ``zero_shot`` is a run
    directory holding round 0 only."""
    run, zero = RunDir(out), RunDir(zero_shot)
    if run.folder(0).exists() or not zero.has(0, METRICS_FILE):
        return
    zero.copy_round(0, run)


def save_round_zero(out: Path, zero_shot: Path) -> None:
    run, zero = RunDir(out), RunDir(zero_shot)
    if zero.folder(0).exists() or not run.has(0, METRICS_FILE):
        return
    run.copy_round(0, zero, without=(SELECTED,))


def run_strategy(world: World, strategy: Strategy, fraction: float, seed: int, task_dir: Path,
                 settings: Settings, teacher: dict | None, store: Path | None = None) -> Path:
    from tutorloop.agents import api

    out = task_dir / f"seed{seed}" / f"{strategy.name}-b{fraction:g}"
    zero_shot = task_dir / "zero-shot"
    if not run_complete(out):
        seed_round_zero(out, zero_shot)
        config = run_config(world, strategy, fraction, seed, out, settings, teacher, store)
        log.info("running %s at budget %g (%d samples), seed %d → %s", strategy.name, fraction, config.budget,
                 seed, out)
        api.run(config, run_id=f"selection-{world.task}-{strategy.name}-{fraction:g}-{seed}")
    save_round_zero(out, zero_shot)
    return out


def once_dir(task_dir: Path, seed: int, name: str, fraction: float | None = None) -> Path:
    """The folder of a one-off LoRA run: ``seed<s>/full-pool``, ``seed<s>/target-data-b<fraction>``."""
    return task_dir / f"seed{seed}" / (name if fraction is None else f"{name}-b{fraction:g}")


def run_full_pool(world: World, seed: int, task_dir: Path, settings: Settings) -> Path:
    """Train on every accepted pool sample with the loop's round-1 LoRA settings, then evaluate (timed)."""
    from tutorloop.retrieval.ingest import Accepted, iter_samples
    from tutorloop.training.configs import LoraTrainConfig

    out = once_dir(task_dir, seed, "full-pool")
    if (out / "result.json").exists():
        return out
    samples = [item.sample for item in iter_samples(world.pool, world.image_root) if isinstance(item, Accepted)]
    config = LoraTrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, seed=seed + 1)
    log.info("full pool: training on %d samples, seed %d", len(samples), seed)
    report, metrics, train_s, eval_s = lora_once(world, samples, config, out, settings, progress=not settings.quick)
    write_once_result(out, samples, report, metrics, train_s, eval_s, FULL_POOL_POLICY)
    return out


def run_target_data(world: World, fraction: float, seed: int, task_dir: Path, settings: Settings) -> Path:
    """Train once on ``fraction`` x pool-size fresh samples of the target's own skill and wording (demo world
    only), with the loop's round recipe, then evaluate: the student's ceiling at that budget."""
    from tutorloop.demo.pool import write_clean
    from tutorloop.demo.targets import TARGETS
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.configs import LoraTrainConfig
    from tutorloop.training.lora import HeldOut

    out = once_dir(task_dir, seed, "target-data", fraction)
    if (out / "result.json").exists():
        return out
    target = TARGETS[world.task]
    n = max(1, round(fraction * world.pool_count) // len(target.skills))
    # a seed range of its own: the world's splits use world seed + 2, the pool the world seed
    data = write_clean(out / "data" / "train.jsonl", target.skills, n, 7000 + seed,
                       templates={s: target.phrasings(s) for s in target.skills}, id_prefix="target-data")
    samples = load_samples(data)
    config = LoraTrainConfig(epochs=settings.epochs, early_stop=settings.early_stop, batch_size=settings.batch_size,
                             seed=seed + 1)
    held_out = HeldOut(load_samples(world.val), world.val.parent) if settings.early_stop else None
    log.info("target data: training on %d samples of %s, seed %d", len(samples), world.task, seed)
    report, metrics, train_s, eval_s = lora_once(world, samples, config, out, settings, held_out=held_out,
                                                 image_root=data.parent)
    write_once_result(out, samples, report, metrics, train_s, eval_s, TARGET_DATA_POLICY)
    return out


def write_once_result(out: Path, samples: list, report: Any, metrics: dict, train_s: float, eval_s: float,
                      policy: str) -> None:
    from tutorloop.retrieval.files import write_json

    write_json(out / "result.json", {
        **metrics, "n_train": report.n_train, "steps": report.steps,
        "seconds": {"selection": 0.0, "training": round(train_s, 3), "evaluation": round(eval_s, 3)},
        "selected_ids_count": len(samples),
        "by_source": dict(Counter(s.source or "?" for s in samples)),
        "noise": dict(Counter(getattr(s, "noise", None) or "clean" for s in samples)),
        "policy": policy,
    })


def lora_once(world: World, samples: list, config: Any, out: Path, settings: Settings, *, held_out: Any = None,
              progress: bool = False, image_root: Path | None = None) -> tuple[Any, dict[str, Any], float, float]:
    """One LoRA run from the untouched student on ``samples`` into ``out/adapter``, then the test and generic
    splits evaluated as the loop evaluates them: (training report, accuracies by split, train s, evaluate s)."""
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.evaluate import evaluate
    from tutorloop.training.lora import train_lora
    from tutorloop.training.student import load_student

    shutil.rmtree(out / "adapter", ignore_errors=True)
    start = time.perf_counter()
    report = train_lora(load_student(world.student, is_trainable=True), samples, image_root or world.image_root, config,
                        out / "adapter", progress=progress, held_out=held_out)
    train_s = time.perf_counter() - start
    student = load_student(world.student, adapter=out / "adapter")
    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    for split, path in (("test", world.test), ("generic", world.generic)):
        result = evaluate(student, load_samples(path), path.parent, batch_size=settings.eval_batch_size,
                          max_new_tokens=settings.max_new_tokens, progress=False)
        metrics[f"{split}_accuracy"] = result.summary["accuracy"]
        metrics[f"{split}_by_source"] = result.summary["by_source"]
    return report, metrics, train_s, time.perf_counter() - start


# --- skill maps --------------------------------------------------------------------------------------


def map_store(world: World, kind: str, teacher: dict | None) -> tuple[Path, Any]:
    """A copy of the world's index carrying a skill map named by teacher ``kind`` ("model" or "oracle"),
    or by the pool's tag ``<field>`` (kind ``tag-<field>``: no teacher): built once per pool and reused by
    every run (and task) on it. The naming replies are cached outside the copy, so a build cut short
    resumes. Returns the store and its SkillMap."""
    from tutorloop.agents import api
    from tutorloop.agents.skills import load_skill_map, map_path
    from tutorloop.agents.teacher_config import TeacherConfig

    store = world.root / f"index-map-{kind}"
    if not map_path(store, "pool").is_file():  # no map yet (or a copy cut short): copy the index afresh
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(world.store, store)
    tag = kind.removeprefix("tag-") if kind.startswith("tag-") else None
    config = None if tag else TeacherConfig(**{
        **{k: v for k, v in teacher.items() if k not in {"cache_dir", "skill_map"}},
        "cache_dir": world.root / f"skills-cache-{kind}"})
    log.info("the %s skill map of the pool in %s (built when missing)", kind, store)
    return store, load_skill_map(api.ensure_skill_map(store, teacher=config, names_from=tag))


def existing_map(world: World, kind: str) -> tuple[Path, Any] | None:
    """The map store of teacher ``kind`` if one was built (``--report-only`` builds nothing)."""
    from tutorloop.agents.skills import load_skill_map, map_path

    store = world.root / f"index-map-{kind}"
    return (store, load_skill_map(map_path(store, "pool"))) if map_path(store, "pool").is_file() else None


def map_path_of(store: Path) -> Path:
    from tutorloop.agents.skills import map_path

    return map_path(store, "pool")


def map_seconds(skill_map: Any) -> float:
    """What the map cost once: clustering + the naming calls (a build resumed from the reply cache
    records only what it paid itself; see the map's cost.cached)."""
    return skill_map.cost.seconds + skill_map.cost.cluster_seconds


def world_skill_of_map_skills(store: Path) -> dict[str, str | None]:
    """Each map skill -> the world skill most of its points ask (the world's ground truth of the map)."""
    from tutorloop.demo.world import SKILLS
    from tutorloop.retrieval.index import PoolIndex

    by_source = {skill.source: skill.name for skill in SKILLS.values()}
    counts: dict[str, Counter] = {}
    index = PoolIndex.open(store=store)
    try:
        for payload in index.payloads(["skill", "source"]):
            if payload.get("skill"):
                counts.setdefault(payload["skill"], Counter())[payload.get("source")] += 1
    finally:
        index.close()
    return {skill: by_source.get(c.most_common(1)[0][0]) for skill, c in counts.items()}


def world_skill_of_name(name: str) -> str | None:
    """A free skill name as a world skill, when it is that skill's own name ("side-color" = side_colour)."""
    from tutorloop.demo.world import SKILLS

    key = name.replace("color", "colour").replace("-", "_")
    return key if key in SKILLS else None


def diagnosis_right(out: Path, map_skills: dict[str, str | None] | None) -> tuple[float | None, int]:
    """Share of a run's diagnosed failures whose (heaviest) diagnosed skill is one the failure needs
    (its world skill's ``taught_by``), and how many were diagnosed."""
    from tutorloop.demo.targets import skill_of_question
    from tutorloop.demo.world import SKILLS
    from tutorloop.retrieval.records import strip_image_tag

    run, right, n = RunDir(out), 0, 0
    for number in run.rounds_done()[1:]:
        for row in run.read(number, DIAGNOSES):
            if row.diagnosis is None:
                continue
            skill = skill_of_question(strip_image_tag(row.question))
            needed = set(SKILLS[skill].taught_by) if skill else set()
            d = row.diagnosis
            said = (map_skills or {}).get(d.skills[0].skill) if d.skills else world_skill_of_name(d.missing_skill)
            n += 1
            right += said is not None and said in needed
    return (right / n if n else None), n


# --- reading results -------------------------------------------------------------------------------


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def composition(records: list[dict], target_sources: tuple[str, ...]) -> dict:
    """Skill mix and noise share of a selected set (``noise`` is pool metadata the loop never reads)."""
    n = len(records)
    by_source = Counter(r.get("source") or "?" for r in records)
    noise = Counter(r.get("noise") or "clean" for r in records)
    return {
        "selected": n,
        "by_source": dict(by_source.most_common()),
        "noise": dict(noise.most_common()),
        "noise_share": (n - noise.get("clean", 0)) / n if n else 0.0,
        "on_target_share": sum(by_source[s] for s in target_sources) / n if n else 0.0,
    }


def diagnose_rounds(out: Path) -> list[tuple[float, int, int]]:
    """(diagnose seconds, diagnoses asked, of which served from the reply cache) of each round >= 1."""
    run, found = RunDir(out), []
    for n in run.rounds_done()[1:]:
        rows = run.read(n, DIAGNOSES)
        found.append((run.seconds(n).get("diagnose", 0.0), len(rows), sum(1 for r in rows if r.cached)))
    return found


def diagnosis_cost(run_dirs: list[Path]) -> float:
    """Median seconds per uncached teacher diagnosis over the rounds that asked the teacher anything."""
    per = [s / (n - c) for out in run_dirs for s, n, c in diagnose_rounds(out) if n > c]
    return statistics.median(per) if per else 0.0


def strategy_row(out: Path, strategy: str, fraction: float, seed: int, zero_generic: float | None,
                 target_sources: tuple[str, ...], diagnosis_s: float = 0.0, map_s: float = 0.0,
                 map_skills: dict[str, str | None] | None = None) -> dict:
    """``diagnosis_s``: seconds one uncached teacher diagnosis costs. Teacher replies are cached and shared
    by the runs of a task (round 1 asks every run of a seed the same questions, and a student that barely
    moved asks some again in round 2), so each reply a run got from the cache is charged ``diagnosis_s``:
    a run's selection cost is what it would pay alone, never what the cache saved it. ``map_s``: this
    run's share of building the skill map it used (the map's cost over the runs that use it)."""
    run = RunDir(out)
    rounds = run.rounds_done()
    final = run.read(rounds[-1], METRICS_FILE)
    summary = run.read_summary()
    by_round = per_round(run, rounds)
    seconds: Counter = Counter()
    for r in by_round[1:]:
        seconds.update(r["seconds"])
    selected = [row.sample.to_record() for n in rounds[1:] for row in run.read(n, SELECTED)]
    cached = sum(c * diagnosis_s for _, _, c in diagnose_rounds(out))
    seconds["diagnose"] = seconds.get("diagnose", 0.0) + cached
    seconds["skill_map"] = map_s
    selection_s = sum(v for k, v in seconds.items() if k not in NOT_SELECTION)
    right, diagnosed = diagnosis_right(out, map_skills)
    return {
        "strategy": strategy, "budget_fraction": fraction, "seed": seed,
        "budget": summary.budget, "rounds": len(rounds) - 1, "stop_reason": summary.stop_reason,
        "val_accuracy": final.val_accuracy, "test_accuracy": final.test_accuracy,
        "generic_accuracy": final.generic_accuracy,
        "forgetting": _forgetting(final.generic_accuracy, zero_generic),
        "test_by_source": final.test_by_source, "generic_by_source": final.generic_by_source,
        **composition(selected, target_sources),
        "diagnosis_right": right, "diagnosed": diagnosed,
        "seconds": {"selection": round(selection_s, 3), "training": round(seconds.get("train", 0.0), 3),
                    "evaluation": round(seconds.get("evaluate", 0.0), 3),
                    **{k: round(seconds.get(k, 0.0), 3) for k in SELECTION_STAGES},
                    "diagnose_charged_for_cache": round(cached, 3), "skill_map_amortised": round(map_s, 3)},
        "per_round": by_round,
        "run_dir": str(out),
    }


def per_round(run: RunDir, rounds: list[int]) -> list[dict]:
    """Accuracies after each round (0 = the untouched student) and the round's seconds per stage."""
    found = []
    for n in rounds:
        metrics = run.read(n, METRICS_FILE)
        found.append({"round": n, "selected": len(run.read(n, SELECTED)),
                      **{k: getattr(metrics, k) for k in ("val_accuracy", "test_accuracy", "generic_accuracy")},
                      "seconds": run.seconds(n)})
    return found


def _forgetting(generic: float | None, zero_generic: float | None) -> float | None:
    """Generic accuracy minus the zero-shot student's: negative means generic skills were forgotten."""
    return None if generic is None or zero_generic is None else generic - zero_generic


def recorded_teacher(runs: list[tuple[str, float, int, Path]]) -> dict | None:
    """The teacher settings a teacher run was made with (from its run.json)."""
    for name, _, _, out in runs:
        if name.startswith("teacher"):
            teacher = RunDir(out).read_info().config["teacher"]
            return {k: teacher.get(k) for k in ("base_url", "model", "dialect", "send_images", "concurrency")}
    return None


def zero_shot_row(zero_shot: Path) -> dict:
    run = RunDir(zero_shot)
    metrics = run.read(0, METRICS_FILE)
    return {"strategy": "zero-shot", "budget_fraction": 0.0, "seed": None, "budget": 0,
            "val_accuracy": metrics.val_accuracy, "test_accuracy": metrics.test_accuracy,
            "generic_accuracy": metrics.generic_accuracy, "forgetting": 0.0,
            "test_by_source": metrics.test_by_source, "generic_by_source": metrics.generic_by_source,
            "selected": 0, "by_source": {}, "noise": {}, "noise_share": 0.0, "on_target_share": 0.0,
            "seconds": {"selection": 0.0, "training": 0.0, "evaluation": run.seconds(0).get("evaluate", 0.0)},
            "run_dir": str(zero_shot)}


def once_row(out: Path, strategy: str, fraction: float, seed: int, zero_generic: float | None,
             target_sources: tuple[str, ...]) -> dict:
    """The row of a one-off LoRA run (``full-pool``, ``target-data``) from its result.json."""
    result = _read(out / "result.json")
    n = result["selected_ids_count"]
    noise = result["noise"]
    return {"strategy": strategy, "budget_fraction": fraction, "seed": seed, "budget": n,
            "val_accuracy": None, "test_accuracy": result["test_accuracy"],
            "generic_accuracy": result["generic_accuracy"],
            "forgetting": _forgetting(result["generic_accuracy"], zero_generic),
            "test_by_source": result["test_by_source"], "generic_by_source": result["generic_by_source"],
            "selected": n, "by_source": result["by_source"], "noise": noise,
            "noise_share": (n - noise.get("clean", 0)) / n if n else 0.0,
            "on_target_share": sum(result["by_source"].get(s, 0) for s in target_sources) / n if n else 0.0,
            "seconds": result["seconds"], "n_train": result["n_train"], "steps": result["steps"],
            "run_dir": str(out)}


# --- aggregation and report ------------------------------------------------------------------------

METRICS = ("test_accuracy", "generic_accuracy", "forgetting", "noise_share", "on_target_share", "diagnosis_right")
SECONDS = ("selection", "training")


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per (strategy, budget) with mean and spread of each metric over the seeds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["budget_fraction"]), []).append(row)
    out = []
    for (strategy, fraction), group in groups.items():
        entry: dict[str, Any] = {"strategy": strategy, "budget_fraction": fraction, "budget": group[0]["budget"],
                                 "n_seeds": len(group), "seeds": [r["seed"] for r in group]}
        for key in METRICS:
            values = [r[key] for r in group if r.get(key) is not None]
            entry[key] = dict(zip(("mean", "spread"), mean_spread(values), strict=True)) if values else None
        for key in SECONDS:
            entry[f"{key}_s"] = dict(zip(("mean", "spread"), mean_spread([r["seconds"][key] for r in group]),
                                         strict=True))
        sources: Counter = Counter()
        for r in group:
            sources.update(r["by_source"])
        entry["by_source"] = dict(sources.most_common())
        out.append(entry)
    order = {name: i for i, name in enumerate(ROW_ORDER)}
    return sorted(out, key=lambda e: (order.get(e["strategy"], len(order)), e["budget_fraction"]))


def _pm(stat: dict | None, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    if stat is None:
        return "—"
    sign = "+" if signed else ""
    return f"{stat['mean'] * scale:{sign}.{digits}f} ± {stat['spread'] * scale:.{digits}f}"


def _mix(by_source: dict, top: int = 3) -> str:
    total = sum(by_source.values())
    if not total:
        return "—"
    return ", ".join(f"{s} {100 * c / total:.0f}%" for s, c in list(by_source.items())[:top])


def markdown(task: str, table: list[dict], settings: dict, notes: list[str], command: str,
             rows: list[dict] | None = None) -> str:
    lines = [
        f"# Selection benchmark — target `{task}`", "",
        f"Pool {settings['pool_size']} samples; {settings['rounds']} round(s) per run, LoRA {settings['epochs']} "
        f"epoch(s) per round, batch {settings['batch_size']}; teacher diagnoses ≤ {settings['max_diagnoses']} "
        "failures per round. Values are mean ± sample standard deviation over the seeds (n). Accuracies and "
        "shares in %; forgetting = generic accuracy − zero-shot generic accuracy (points; negative = forgot). "
        "Selection = diagnose + retrieve + rerank + draw + replay seconds (teacher, embedding, retrieval, "
        "scoring, uniform draws, known-skill replay).", "",
        "| strategy | budget | n | target test acc | generic acc | forgetting | noise share | on-target share "
        "| diagnosed skill right | selection s | training s | selected skills (top 3) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        budget = "—" if e["strategy"] == "zero-shot" else f"{100 * e['budget_fraction']:g}% ({e['budget']})"
        lines.append(
            f"| {display(e['strategy'])} | {budget} | {e['n_seeds']} | {_pm(e['test_accuracy'])} "
            f"| {_pm(e['generic_accuracy'])} "
            f"| {_pm(e['forgetting'], signed=True)} | {_pm(e['noise_share'], digits=0)} "
            f"| {_pm(e['on_target_share'], digits=0)} | {_pm(e.get('diagnosis_right'), digits=0)} "
            f"| {_pm(e['selection_s'], 1, 0)} "
            f"| {_pm(e['training_s'], 1, 0)} | {_mix(e['by_source'])} |")
    lines += round_lines(rows or [])
    lines += ["", "## Policies", "", f"- {FULL_POOL_POLICY}", f"- {TARGET_DATA_POLICY}", f"- {FINAL_POLICY}",
              "- every run spends its whole budget (patience = rounds: no early stop), split evenly over rounds.",
              "- teacher replies are cached and shared by the runs of a task (they often ask the same questions); "
              "every reply a run got from the cache is charged the median uncached seconds per diagnosis (per "
              "teacher), so selection seconds are what a run alone would pay.",
              "- a skill map is built once per pool (k teacher calls, k = clamp(round(sqrt(N/2)), 32, 1024)); "
              "its seconds (clustering + naming) are divided among this report's runs that use it and added to "
              "their selection seconds.",
              f"- rows marked {ORACLE_LABEL} use the oracle teacher (the world's ground truth behind the OpenAI "
              "API): the bound of what diagnosis can give, never the product's result.",
              "- diagnosed skill right: share of diagnosed failures whose heaviest diagnosed skill is one the "
              "failure needs (the world's skill of the question, or a composite's parts); a map skill stands "
              "for the world skill most of its points ask; a free name must be the world skill's own name."]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


ROUND_STRATEGIES = ("random", "failures", "teacher")


def round_lines(rows: list[dict]) -> list[str]:
    """Round by round for one run each of random, failures and teacher at the same budget and seed: the
    lowest seed, at the largest budget all three reached."""
    runs = {(r["strategy"], r["budget_fraction"], r["seed"]): r for r in rows if r.get("per_round")}
    common = [(f, s) for (name, f, s) in runs if name == ROUND_STRATEGIES[0]
              and all((other, f, s) in runs for other in ROUND_STRATEGIES[1:])]
    if not common:
        return []
    seed = min(s for _, s in common)
    fraction = max(f for f, s in common if s == seed)
    lines = ["", f"## Round by round (seed {seed}, budget {100 * fraction:g}%)", "",
             "Accuracy after each round in % (round 0 = the untouched student) and that round's seconds per "
             "stage (the teacher's replies may come from the shared cache: these are the seconds paid).", "",
             "| strategy | round | selected | val acc | target test acc | generic acc | "
             + " | ".join(f"{k} s" for k in ROUND_STAGES) + " |", "|---" * (6 + len(ROUND_STAGES)) + "|"]
    for name in ROUND_STRATEGIES:
        for r in runs[(name, fraction, seed)]["per_round"]:
            sec = r["seconds"]
            lines.append(f"| {name} | {r['round']} | {r['selected']} | {_pct(r['val_accuracy'])} "
                         f"| {_pct(r['test_accuracy'])} | {_pct(r['generic_accuracy'])} | "
                         + " | ".join(f"{sec.get(k, 0.0):.1f}" for k in ROUND_STAGES) + " |")
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def display(strategy: str) -> str:
    """A strategy's name as tables and plots show it (oracle rows and the ceiling carry their label)."""
    found = next((s for s in STRATEGIES if s.name == strategy), None)
    return found.label if found else {"target-data": "target-data — the target's own samples (ceiling)"}.get(
        strategy, strategy)


def plot(task: str, table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for strategy in (*(s.name for s in STRATEGIES), "target-data"):
        points = sorted((e for e in table if e["strategy"] == strategy and e["test_accuracy"]),
                        key=lambda e: e["budget_fraction"])
        if points:
            ax.errorbar([100 * e["budget_fraction"] for e in points],
                        [100 * e["test_accuracy"]["mean"] for e in points],
                        yerr=[100 * e["test_accuracy"]["spread"] for e in points],
                        marker="o", capsize=3, label=display(strategy))
    for e in table:
        if e["strategy"] == "full-pool" and e["test_accuracy"]:
            ax.axhline(100 * e["test_accuracy"]["mean"], color="black", label="full pool")
        if e["strategy"] == "zero-shot" and e["test_accuracy"]:
            ax.axhline(100 * e["test_accuracy"]["mean"], color="grey", linestyle="--", label="zero-shot")
    ax.set_xlabel("budget (% of the pool)")
    ax.set_ylabel("target test accuracy (%)")
    ax.set_title(f"selection benchmark — {task}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class Knob:
    """A setting varied over rows named ``<base><marker><value>`` (a trade-off curve); the base row is value 0."""

    marker: str
    label: str  # the x axis
    file: str  # selection-<task>-<file>.png
    setting: str  # the run config's field (dotted into a section) whose default the plot marks

    def default(self) -> float:
        from tutorloop.agents.config import RunConfig

        section, _, name = self.setting.rpartition(".")
        model = RunConfig.model_fields[section].annotation if section else RunConfig
        return model.model_fields[name].default


KNOBS = (
    # --known-shares: <selector>-known-<share>; the selector's plain row pins the share to 0
    Knob("-known-", "known-replay share of round 1", "known-share", "known_share"),
    # --anchor-weights: <selector>-known-anchor<w>; the -known row (share KNOWN_SHARE) is weight 0
    Knob("-anchor", "anchor weight (KL to the untouched student)", "anchor", "lora.anchor_weight"),
)


def knob_curve(table: list[dict], marker: str) -> dict[tuple[str, float], list[tuple[float, dict]]]:
    """The rows ``<base><marker><value>`` per base row and budget, with the base row itself as value 0, sorted
    by value (``-known-``: the ``--known-shares`` rows of whichever ``--scorer-selector`` made them, the
    selector's plain row pinned to share 0). Curves of fewer than two points drop."""
    points_of: dict[tuple[str, float], list[tuple[float, dict]]] = {}
    for e in table:
        base, _, value = e["strategy"].rpartition(marker)
        if base and e["test_accuracy"]:
            with contextlib.suppress(ValueError):
                points_of.setdefault((base, e["budget_fraction"]), []).append((float(value), e))
    plain = {(e["strategy"], e["budget_fraction"]): e for e in table if e["test_accuracy"]}
    return {key: sorted(points + ([(0.0, plain[key])] if key in plain else []), key=lambda p: p[0])
            for key, points in points_of.items() if len(points) + (key in plain) > 1}


def plot_knob_curve(task: str, curves: dict[tuple[str, float], list[tuple[float, dict]]], knob: Knob,
                    path: Path) -> None:
    """The knob against target accuracy and against forgetting, the product's default marked."""
    default = knob.default()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2))
    for (metric, label), ax in zip((("test_accuracy", "target test accuracy (%)"),
                                    ("forgetting", "forgetting (points)")), axes, strict=True):
        for (selector, budget), points in sorted(curves.items()):
            ax.errorbar([value for value, _ in points], [100 * e[metric]["mean"] for _, e in points],
                        yerr=[100 * e[metric]["spread"] for _, e in points], marker="o", capsize=3,
                        label=f"{selector}, budget {100 * budget:g}%")
        ax.axvline(default, color="grey", linestyle="--", label=f"default ({default:g})")
        ax.set_xlabel(knob.label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{knob.label}: trade-off — {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(task: str, rows: list[dict], settings: dict, notes: list[str], results: Path,
                  command: str) -> dict[str, Path]:
    results.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    paths = {ext: results / f"selection-{task}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps({
        "task": task, "settings": settings, "policies": [FULL_POOL_POLICY, TARGET_DATA_POLICY, FINAL_POLICY],
        "notes": notes,
        "command": command, "table": table, "rows": rows,
    }, indent=2) + "\n")
    paths["md"].write_text(markdown(task, table, settings, notes, command, rows))
    plot(task, table, paths["png"])
    for knob in KNOBS:
        curves = knob_curve(table, knob.marker)
        if curves:
            paths[knob.file] = results / f"selection-{task}-{knob.file}.png"
            plot_knob_curve(task, curves, knob, paths[knob.file])
    return paths


# --- the teacher -------------------------------------------------------------------------------------


@contextlib.contextmanager
def teacher_endpoint(args: argparse.Namespace, notes: list[str]):
    """Yields the teacher settings, or None (teacher rows skipped, with a note) when none is available."""
    from tutorloop.agents.cpu_teacher import cpu_teacher_available, serve_cpu_teacher

    if args.report_only:  # reading finished runs needs no live teacher
        notes.append("--report-only: nothing was run in this call; each run's teacher is in its run.json")
        yield {}
    elif args.teacher == "none":
        notes.append("teacher rows skipped: --teacher none")
        yield None
    elif args.teacher:
        yield {"base_url": args.teacher, "model": args.teacher_model, "dialect": args.teacher_dialect,
               "send_images": not args.teacher_text_only, "progress": False}
    elif not cpu_teacher_available():
        notes.append("teacher rows skipped: no --teacher given and the CPU teacher is not installed "
                     "(pip install -e '.[teacher-cpu]')")
        yield None
    else:
        try:
            server = serve_cpu_teacher()
            url = server.__enter__()
        except RuntimeError as error:
            notes.append(f"teacher rows skipped: the CPU teacher did not start ({error})")
            yield None
            return
        notes.append("teacher: the CPU demo teacher (llama.cpp + SmolLM2-135M, text only, json_object dialect)")
        try:
            # llama.cpp serves one request at a time: queued requests wait, so the timeout is long (a
            # grounded prompt took > 120 s behind three others on a loaded 2-core machine)
            yield {"base_url": url, "dialect": "json_object", "send_images": False, "concurrency": 4,
                   "timeout_s": 600, "progress": False}
        finally:
            server.__exit__(None, None, None)


@contextlib.contextmanager
def oracle_endpoint(args: argparse.Namespace, notes: list[str]):
    """The oracle teacher (demo/oracle_teacher.py) for the oracle rows: a real HTTP server on 127.0.0.1."""
    from tutorloop.demo.oracle_teacher import OracleTeacher

    if args.report_only:
        yield {}
        return
    with OracleTeacher() as oracle:
        notes.append(f"oracle-map: the oracle teacher, {ORACLE_LABEL} — the world's ground truth behind the "
                     "OpenAI API (json_object dialect), never the product's result")
        yield {"base_url": oracle.base_url, "model": "oracle", "dialect": "json_object", "send_images": False,
               "concurrency": 8, "progress": False}


# --- the CLI -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Selection benchmark: zero-shot, random, failures, teacher (+ ablations) and full-pool "
                    "training on the demo world at equal budgets, with accuracy, forgetting, selected-set "
                    "composition and selection/training seconds. Completed runs under --out are reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--target", default="side-colour",
                        help="demo target task(s), comma-separated (see demo/targets.py)")
    parser.add_argument("--budgets", default="0.02,0.05,0.1", help="budgets as fractions of the pool, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of selection and training, comma-separated")
    parser.add_argument("--strategies", default=",".join(s.name for s in STRATEGIES),
                        help="strategies to run, comma-separated")
    parser.add_argument("--no-full-pool", action="store_true", help="skip the full-pool row")
    parser.add_argument("--target-data", action="store_true",
                        help="add the ceiling row: LoRA once on budget-many fresh samples of the target itself")
    parser.add_argument("--scorers", help="extra rows, one per re-rank scorer or rule (comma-separated: "
                        "perturbation, perplexity, image_grounding, el2n, answer_entropy, entropy, none)")
    parser.add_argument("--scorer", default="perturbation",
                        help="re-rank scorer of every row but the --scorers ones (default perturbation: the committed "
                        "rows' scorer, not the product's default none)")
    parser.add_argument("--early-stop", action="store_true",
                        help="each round trains until the val split's answer loss stops falling (at most --epochs; "
                        "the product's default recipe) instead of a fixed --epochs (the committed rows' recipe)")
    parser.add_argument("--scorer-selector", default="failures", choices=["failures", "teacher"],
                        help="selector of the --scorers and --known-shares rows")
    parser.add_argument("--known-shares", help="extra rows, one per known-replay share of round 1 "
                        "(comma-separated, e.g. 0.15,0.5,0.7: the replay-vs-forgetting trade-off curve)")
    parser.add_argument("--anchor-weights", help="extra rows, one per anchor weight on top of the -known rows' share "
                        "(comma-separated, e.g. 1,3: the anchoring-vs-forgetting trade-off curve)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the complete runs among those asked for, note the rest")
    parser.add_argument("--out", type=Path, default=Path("runs/selection"), help="run directories (reused)")
    parser.add_argument("--world", type=Path, help="demo world folder (default: OUT/world)")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the demo world and its student")
    parser.add_argument("--student", type=Path, help="student folder (default: the demo world's student)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="where the JSON/MD/PNG go")
    parser.add_argument("--pool-size", type=int, help="pool samples (default 6000; 600 with --quick)")
    parser.add_argument("--rounds", type=int, help="loop rounds per run (default 2; 1 with --quick)")
    parser.add_argument("--epochs", type=int, help="LoRA epochs per round, also for full-pool (default 3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=16, help="LoRA batch size")
    parser.add_argument("--max-diagnoses", type=int, help="failures sent to the teacher per round (default 48; 6 with --quick)")
    parser.add_argument("--perturbation-draws", type=int, help="perturbations per candidate (default 3; 1 with --quick)")
    parser.add_argument("--teacher", help="OpenAI-compatible teacher URL; default: the CPU teacher when installed; "
                        "'none' skips the teacher rows")
    parser.add_argument("--teacher-model", default="teacher", help="model name the teacher endpoint serves")
    parser.add_argument("--teacher-dialect", default="auto", choices=["auto", "json_schema", "json_object"])
    parser.add_argument("--teacher-text-only", action="store_true", help="do not send images to --teacher")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: 600-sample pool, one budget (5%%), one seed, small val/test, 1 round of "
                             "1 epoch, a random tiny student — a few minutes on 2 cores")
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets = "0.05" if args.budgets == parser.get_default("budgets") else args.budgets
        args.seeds = "0" if args.seeds == parser.get_default("seeds") else args.seeds
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value, full, fast):
        return value if value is not None else (fast if quick else full)

    return Settings(
        pool_size=pick(args.pool_size, 6000, 600), n_val=40 if quick else 200, n_test=40 if quick else 500,
        n_generic_per_skill=5 if quick else 50, rounds=pick(args.rounds, 2, 1), epochs=pick(args.epochs, 3, 1),
        batch_size=args.batch_size, max_diagnoses=pick(args.max_diagnoses, 48, 6), eval_batch_size=32,
        max_new_tokens=8 if quick else 16, perturbation_draws=pick(args.perturbation_draws, 3, 1), quick=quick,
        early_stop=args.early_stop, scorer=args.scorer)


def _floats(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not 0 < v <= 1 for v in values):
        raise SystemExit(f"--budgets: fractions in (0, 1] expected, got {text!r}")
    return values


def benchmark_task(task: str, args: argparse.Namespace, settings: Settings, command: str) -> dict[str, Path]:
    from tqdm.auto import tqdm

    from tutorloop.demo.targets import TARGETS
    from tutorloop.demo.world import SKILLS

    budgets, seeds = _floats(args.budgets), [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = [s for s in args.strategies.split(",") if s.strip()]
    unknown = set(wanted) - {s.name for s in STRATEGIES}
    if unknown:
        raise SystemExit(f"--strategies: unknown {sorted(unknown)}; known: {[s.name for s in STRATEGIES]}")
    strategies = ([s for s in STRATEGIES if s.name in wanted] + scorer_strategies(args.scorers, args.scorer_selector)
                  + share_strategies(args.known_shares, args.scorer_selector)
                  + anchor_strategies(args.anchor_weights, args.scorer_selector))
    skipped: list[str] = []
    if settings.rounds == 1 and any(s.name == "teacher-no-replay" for s in strategies):
        # the loop replays earlier rounds' selections: with one round there is nothing to replay
        strategies = [s for s in strategies if s.name != "teacher-no-replay"]
        skipped.append("teacher-no-replay skipped: with 1 round there is no earlier selection to replay "
                       "(it would equal teacher)")
    world = prepare_world(task, args, settings)
    task_dir = args.out / task
    notes = [*args.note, *skipped]
    check_same_world(task_dir, world, args.world or args.out / "world")
    rows: list[dict] = []
    needs_model = any(s.needs_model_teacher for s in strategies)
    needs_oracle = any(s.teacher == "oracle" for s in strategies)
    with teacher_endpoint(args, notes) if needs_model else contextlib.nullcontext(None) as model_teacher, \
            oracle_endpoint(args, notes) if needs_oracle else contextlib.nullcontext(None) as oracle_teacher:
        teachers = {"model": model_teacher, "oracle": oracle_teacher}
        for kind, cache in (("model", "teacher_cache"), ("oracle", "oracle_cache")):
            if teachers[kind] is not None:  # shared by a task's runs: round 1 is asked once
                teachers[kind] = {**teachers[kind], "cache_dir": str(task_dir / cache)}
        jobs = [(seed, fraction, s) for seed in seeds for fraction in budgets for s in strategies
                if not s.needs_teacher or teachers[s.teacher] is not None]
        maps: dict[str, tuple[Path, Any]] = {}
        for strategy in {s.map_kind: s for _, _, s in jobs if s.skill_map}.values():
            found = existing_map(world, strategy.map_kind) if args.report_only else \
                map_store(world, strategy.map_kind, teachers[strategy.teacher])
            if found is not None:
                maps[strategy.map_kind] = found
        runs = []
        missing: dict[str, list[str]] = {}
        for seed, fraction, strategy in tqdm(jobs, desc=f"selection {task}", unit="run"):
            out = task_dir / f"seed{seed}" / f"{strategy.name}-b{fraction:g}"
            if args.report_only and not run_complete(out):
                missing.setdefault(strategy.name, []).append(f"{100 * fraction:g}% seed {seed}")
                continue
            store = maps[strategy.map_kind][0] if strategy.skill_map else None
            runs.append((strategy.name, fraction, seed,
                         run_strategy(world, strategy, fraction, seed, task_dir, settings,
                                      teachers[strategy.teacher] if strategy.needs_teacher else None, store)))
    full_runs = []
    for seed in [] if args.no_full_pool else seeds:
        if args.report_only and not (once_dir(task_dir, seed, "full-pool") / "result.json").exists():
            missing.setdefault("full-pool", []).append(f"seed {seed}")
            continue
        full_runs.append((seed, run_full_pool(world, seed, task_dir, settings)))
    data_runs = []
    for seed, fraction in [(seed, fraction) for seed in seeds for fraction in budgets] if args.target_data else []:
        if args.report_only and not (once_dir(task_dir, seed, "target-data", fraction) / "result.json").exists():
            missing.setdefault("target-data", []).append(f"{100 * fraction:g}% seed {seed}")
            continue
        data_runs.append((fraction, seed, run_target_data(world, fraction, seed, task_dir, settings)))
    notes += [f"not run (--report-only found no complete run): {name} at {', '.join(which)}"
              for name, which in missing.items()]
    zero_shot = task_dir / "zero-shot"
    zero_generic = None
    if RunDir(zero_shot).has(0, METRICS_FILE):
        rows.append(zero_shot_row(zero_shot))
        zero_generic = rows[0]["generic_accuracy"]
    by_name = {s.name: s for s in (*STRATEGIES, *strategies)}  # strategies: also the --scorers rows
    per_diagnosis = {kind: diagnosis_cost([out for name, _, _, out in runs
                                           if by_name[name].needs_teacher and by_name[name].teacher == kind])
                     for kind in ("model", "oracle")}
    map_users = Counter(by_name[name].map_kind for name, *_ in runs if by_name[name].skill_map)
    map_share = {kind: map_seconds(maps[kind][1]) / n for kind, n in map_users.items() if kind in maps}
    map_truth = {kind: world_skill_of_map_skills(store) for kind, (store, _) in maps.items()}
    for kind, (store, skill_map) in maps.items():
        named_by = f"pool's {kind.removeprefix('tag-')} tags" if kind.startswith("tag-") else f"{kind} teacher"
        notes.append(f"skill map named by the {named_by}: {len(skill_map.skills)} skills from {skill_map.k} clusters "
                     f"({len(skill_map.unnamed)} unnamed), {skill_map.cost.requests} requests "
                     f"({skill_map.cost.cached} cached), {map_seconds(skill_map):.1f} s, shared by "
                     f"{map_users.get(kind, 0)} run(s) of this report: {map_path_of(store)}")
    for name, fraction, seed, out in runs:
        strategy = by_name[name]
        rows.append(strategy_row(
            out, name, fraction, seed, zero_generic, world.target_sources,
            per_diagnosis[strategy.teacher] if strategy.needs_teacher else 0.0,
            map_s=map_share.get(strategy.map_kind, 0.0) if strategy.skill_map else 0.0,
            map_skills=map_truth.get(strategy.map_kind) if strategy.skill_map else None))
    rows += [once_row(out, "full-pool", 1.0, seed, zero_generic, world.target_sources) for seed, out in full_runs]
    # the target's own samples are on target too (a composite's are not among its parts' sources)
    with_own = tuple(dict.fromkeys([*world.target_sources, *(SKILLS[s].source for s in TARGETS[task].skills)]))
    rows += [once_row(out, "target-data", fraction, seed, zero_generic, with_own)
             for fraction, seed, out in data_runs]
    payload = {**settings.__dict__, "task": task, "budgets": budgets, "seeds": seeds,
               "pool_count": world.pool_count, "target_sources": list(world.target_sources),
               "teacher_seconds_per_diagnosis": {k: round(v, 3) for k, v in per_diagnosis.items()},
               "student": str(world.student), "threads": args.threads, "teacher": recorded_teacher(runs),
               "skill_maps": {kind: {"store": str(store), "skills": len(m.skills), "k": m.k, "seconds": map_seconds(m),
                                     "cost": m.cost.model_dump()} for kind, (store, m) in maps.items()}}
    return write_results(task, rows, payload, notes, args.results, command)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    settings = settings_from(args)
    command = "benchmarks/selection.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for task in [t for t in args.target.split(",") if t.strip()]:
        paths = benchmark_task(task, args, settings, command)
        print(paths["md"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
