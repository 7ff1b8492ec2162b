"""Measured against the field: our selectors and the published ones (RDS+, LESS) at equal budget, on fresh
worlds drawn from held-out seeds (lab/worlds.py), with the guards the literature asks for.

One ``tutorloop run`` per world, target and selector at the same budget; everything else is the product's
default (the held-out stop, known replay on top, the operating point within 1 point of forgetting). Per run:
the target's test accuracy, forgetting on the world's generic split, the selection's seconds (every stage
but training and evaluation: for rds the student's vectors of the pool, for less its warm-up and gradients)
against the training seconds (and against the training it saves: the full pool's), and a leakage check of
the selected samples against the test split (the same question text; the same image bytes). Guards in every
table: zero-shot, random at equal budget, length-matched random (``random-length``: a random sample of the
same text length for each sample `failures` chose in the same world, target, budget and seed;
lab/selectors.py), the full pool (``full-pool``: every pool
sample, the loop's round recipe, trained once), the target-data ceiling (``target-data``: fresh samples of
the target itself, trained once), selection seeds (``--run-seeds``) and pool sizes (``--pool-size``).

    .venv/bin/python benchmarks/peers.py --seeds 101,102,103 --selectors random,failures,rds,less,target-data
    .venv/bin/python benchmarks/peers.py --selectors random-length,full-pool
    .venv/bin/python benchmarks/peers.py --selectors random,failures,rds --run-seeds 1,2
    .venv/bin/python benchmarks/peers.py --report

Results: ``benchmarks/results/peers/peers.{json,md}`` and ``rows.jsonl``; the runs stay under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.front import OP, machine, settings_for  # noqa: E402
from benchmarks.selection import Strategy, World, indexed_world, run_strategy  # noqa: E402
from lab.selectors import LENGTH_MATCHED, length_matched, registered, text_length  # noqa: E402
from lab.worlds import HELD_OUT_SEEDS, TUNING_SEEDS, FreshTarget, build_fresh_world, draw_world  # noqa: E402

log = logging.getLogger("benchmarks.peers")
DEFAULTS = {"known_share": 1.0, "known_on_top": True, **OP}  # the product's retention defaults
SELECTORS = ("random", "failures", "rds", "less", "teacher")
# The product's default selector as `tutorloop demo` runs it without a GPU: the CPU teacher (SmolLM2-135M on
# llama.cpp, text only) grounded in the pool's source-tag map, 8 diagnoses a round. A VLM teacher served by
# vLLM is what the selector is for; none runs on this machine.
CPU_TEACHER = {"send_images": False, "dialect": "json_object", "concurrency": 2, "max_tokens": 192,
               "map_skills_shown": 3, "timeout_s": 600, "progress": False}
TEACHER_RUN = {**DEFAULTS, "max_diagnoses": 8}
GUARDS = (LENGTH_MATCHED, "full-pool", "target-data")  # rows beside the selectors
ONCE = ("full-pool", "target-data")  # trained once from the untouched student, outside the loop
NOT_SELECTION = {"train", "evaluate", "operating_point", "replay"}
POOL_SIZE = 3000  # the worlds' pool unless --pool-size says otherwise


def world_dir(seed: int, pool_size: int) -> str:
    return f"fresh-{seed}" if pool_size == POOL_SIZE else f"fresh-{seed}-p{pool_size}"


def key(row: dict) -> tuple:
    """What makes a row: world, pool size, target, selector, budget, selection seed."""
    return (row["world_seed"], row.get("pool_size", POOL_SIZE), row["target"], row["selector"], row["budget"],
            row.get("run_seed", 0))


def shipped_student(out: Path) -> Path:
    from tutorloop.demo.student import build_student

    return build_student(out / "students", seed=0, progress=False)


def fresh_worlds(seed: int, out: Path, pool_size: int) -> list[tuple[World, FreshTarget]]:
    world = draw_world(seed, pool_size)
    paths = build_fresh_world(world, out / world_dir(seed, pool_size) / "world", shipped_student(out))
    return [(indexed_world(t.name, paths, paths.student, (f"{t.skill}-v1",), paths.root), t) for t in world.targets]


def run_selector(world: World, target: FreshTarget, seed: int, selector: str, budget: float, out: Path,
                 run_seed: int = 0, pool_size: int = POOL_SIZE, teacher_url: str | None = None) -> dict:
    from benchmarks.selection import map_store
    from tutorloop.agents.run_dir import METRICS, SELECTED, RunDir

    task_dir = out / world_dir(seed, pool_size) / target.name
    began = time.perf_counter()
    strategy, teacher, store = Strategy(selector, selector, run=DEFAULTS), None, None
    selectors = contextlib.nullcontext()  # the product's registry as it is
    if selector == "teacher":
        strategy = Strategy(selector, selector, run=TEACHER_RUN, skill_map=True, map_names="source",
                            teacher_settings=CPU_TEACHER)
        store, _ = map_store(world, strategy.map_kind, None)
        teacher = {"base_url": teacher_url}
    elif selector == LENGTH_MATCHED:
        selectors = registered(length_matched(reference_lengths(task_dir, budget, run_seed)))
    with selectors:
        run = RunDir(run_strategy(world, strategy, budget, run_seed, task_dir, settings_for(1), teacher, store))
    rounds = run.rounds_done()
    history = [run.read(n, METRICS) for n in rounds]
    seconds = [run.seconds(n) for n in rounds[1:]]
    selected = [row.sample for n in rounds[1:] for row in run.read(n, SELECTED)]
    return {
        "world_seed": seed, "pool_size": pool_size, "target": target.name, "kind": target.kind,
        "selector": selector, "budget": budget, "run_seed": run_seed,
        "test": [m.test_accuracy for m in history], "generic": [m.generic_accuracy for m in history],
        "selected": len(selected),
        "selection_s": round(sum(v for s in seconds for k, v in s.items() if k not in NOT_SELECTION), 1),
        "train_s": round(sum(s.get("train", 0.0) for s in seconds), 1),
        "leak": leakage(selected, world), "wall_s": round(time.perf_counter() - began, 1),
    }


def reference_lengths(task_dir: Path, budget: float, run_seed: int) -> list[int]:
    """The text lengths of what `failures` chose (its replay left out) in this world, target, budget and seed."""
    from tutorloop.agents.run_dir import SELECTED, RunDir

    run = RunDir(task_dir / f"seed{run_seed}" / f"failures-b{budget:g}")
    if not run.has(1, SELECTED):
        raise SystemExit(f"{LENGTH_MATCHED} matches the lengths `failures` chose: run --selectors failures first "
                         f"({run.root} has no round 1)")
    return [text_length(row.sample) for row in run.read(1, SELECTED) if row.why.gap != "known"]


def run_once(world: World, target: FreshTarget, seed: int, selector: str, budget: float, out: Path,
             pool_size: int = POOL_SIZE) -> dict:
    """A row trained once from the untouched student with the loop's round recipe (its held-out stop on the
    val split): ``target-data``, the budget spent on fresh samples of the target itself (new scenes) — the
    ceiling; ``full-pool``, every sample of the pool."""
    from benchmarks.selection import lora_once
    from tutorloop.demo.pool import write_clean
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.configs import RoundLoraConfig
    from tutorloop.training.lora import HeldOut

    folder = out / world_dir(seed, pool_size) / target.name / selector
    result = folder / "result.json"
    if not result.exists():
        if selector == "target-data":
            n = max(1, round(budget * world.pool_count))
            data = write_clean(folder / "data" / "train.jsonl", (target.skill,), n, seed + 7,
                               templates={target.skill: target.templates}, id_prefix="target-data")
            samples, image_root = load_samples(data), data.parent
        else:
            samples, image_root = load_samples(world.pool), world.image_root
        began = time.perf_counter()
        held_out = HeldOut(load_samples(world.val), world.val.parent)  # the loop's stop: the val split's loss
        _, metrics, train_s, _ = lora_once(world, samples, RoundLoraConfig(seed=1), folder, settings_for(1),
                                           image_root=image_root, held_out=held_out)
        result.write_text(json.dumps({"test": metrics["test_accuracy"], "generic": metrics["generic_accuracy"],
                                      "train_s": train_s, "n": len(samples),
                                      "wall_s": round(time.perf_counter() - began, 1)}) + "\n")
    done = json.loads(result.read_text())
    return {"world_seed": seed, "pool_size": pool_size, "target": target.name, "kind": target.kind,
            "selector": selector, "budget": budget if selector == "target-data" else 1.0, "run_seed": 0,
            "test": [None, done["test"]], "generic": [None, done["generic"]], "selected": done["n"],
            "selection_s": 0.0, "train_s": done["train_s"], "leak": None, "wall_s": done["wall_s"]}


def run_of(out: Path, row: dict):
    """The run directory of a row (where benchmarks.selection.run_strategy put it)."""
    from tutorloop.agents.run_dir import RunDir

    return RunDir(out / world_dir(row["world_seed"], row.get("pool_size", POOL_SIZE)) / row["target"]
                  / f"seed{row.get('run_seed', 0)}" / f"{row['selector']}-b{row['budget']:g}")


def whole_change(out: Path, row: dict) -> dict | None:
    """Round 1's trained change kept whole (alpha 1 on its front): val accuracy and forgetting before the
    operating point chose, for a selector whose change the forgetting bound refused."""
    from tutorloop.agents.run_dir import FRONT

    run = run_of(out, row)
    if not run.has(1, FRONT):
        return None
    front = run.read(1, FRONT)
    whole = next((p for p in front.points if p.alpha == 1.0), None)
    return None if whole is None else {"val": whole.val_accuracy, "forgetting": whole.forgetting,
                                       "chosen": front.chosen}


def flops_ratio(out: Path, row: dict, pool_count: int) -> float | None:
    """The selection's student FLOPs over round 1's training FLOPs, counted in sample passes (the model's size and
    a sample's tokens cancel): a forward pass costs 2 units, a forward and backward 6. rds: one forward over the
    pool (paid once per student; charged here in full); less: the warm-up's epochs and a gradient per shortlisted
    sample and per failure; training: every trained sample in every epoch run. failures and random select with
    the text embedder, whose cost next to the student's is left out (0); the teacher's is another model's and
    is not estimated here (None: its seconds are the measure)."""
    from tutorloop.agents.run_dir import DIAGNOSES

    if row["selector"] in (*ONCE, "teacher"):
        return None
    run = run_of(out, row)
    training = run.training(1)
    if not training.get("epochs_run"):
        return None
    trained = 6 * training["n_train"] * training["epochs_run"]
    if row["selector"] == "rds":
        return 2 * pool_count / trained
    if row["selector"] == "less":
        less = run.read_info().config["less"]
        shortlisted = min(less["shortlist"], pool_count)
        failures = len(run.read(1, DIAGNOSES))
        return 6 * (less["warmup_samples"] * less["warmup_epochs"] + shortlisted + failures) / trained
    return 0.0


def leakage(selected: list, world: World) -> dict:
    """Selected samples whose question text, or whose image bytes, equal a test sample's."""
    from tutorloop.retrieval.images import image_bytes
    from tutorloop.retrieval.ingest import load_samples

    test = load_samples(world.test)
    questions = {s.question.strip().lower() for s in test}
    images = {hashlib.sha256(image_bytes(world.test.parent, ref)).hexdigest() for s in test for ref in s.images}
    same_image = sum(any(hashlib.sha256(image_bytes(world.image_root, ref)).hexdigest() in images
                         for ref in s.images) for s in selected)
    return {"same_question": sum(s.question.strip().lower() in questions for s in selected),
            "same_image": same_image, "of": len(selected)}


# --- the report ----------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(rows: list[dict], command: str, out: Path) -> str:
    lines = [f"# Selectors against RDS+ and LESS on fresh worlds ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {machine()}. Worlds drawn by lab/worlds.py; held-out seeds {list(HELD_OUT_SEEDS)} "
             f"(reported here), tuning seeds {list(TUNING_SEEDS)}. One run per world, target, selector and selection "
             "seed; the product's defaults otherwise. Accuracies in %; forgetting = generic points lost against the "
             "student as given; selection s = every stage but training and evaluation. Summaries: each world × target "
             "pair's mean over its selection seeds, then mean ± sd over the pairs; seed sd = the sd over selection "
             "seeds within a pair, averaged over the pairs that have several. Alpha kept: the share of round 1's "
             "trained change the operating point kept within 1 point of forgetting (0: the start); whole change: "
             "val accuracy and forgetting had the change been kept whole. random-length: for each sample `failures` "
             "chose, a random one of the same text length. full-pool: every pool sample, trained once with the "
             "loop's round recipe (no operating point). Leakage counts trained samples whose question text equals a "
             "test question (the worlds are templated: a `plain` target asks in the pool's own phrasings) and whose "
             "image bytes equal a test image's (a test item in the pool).", ""]
    zero = {pair(r): (r["test"][0], r["generic"][0]) for r in rows if r["test"][0] is not None}
    for pool_size, budget in sorted({(r.get("pool_size", POOL_SIZE), r["budget"]) for r in rows
                                     if r["selector"] != "full-pool"}):
        held_out = [r for r in rows if r["world_seed"] in HELD_OUT_SEEDS and r.get("pool_size", POOL_SIZE) == pool_size
                    and (r["budget"] == budget or r["selector"] == "full-pool")]
        if any(r["selector"] != "full-pool" for r in held_out):
            lines += [f"## Budget {budget:.0%} of a {pool_size}-sample pool: over the held-out worlds", "",
                      *summary_lines(held_out, zero, out, pool_size), "", *margin_lines(held_out), ""]
    for seed, pool_size, target, budget in sorted({(r["world_seed"], r.get("pool_size", POOL_SIZE), r["target"],
                                                    r["budget"]) for r in rows if r["selector"] != "full-pool"}):
        group = [r for r in rows if (r["world_seed"], r.get("pool_size", POOL_SIZE), r["target"]) == (seed, pool_size, target)
                 and (r["budget"] == budget or r["selector"] == "full-pool")]
        kind = "held-out" if seed in HELD_OUT_SEEDS else "tuning" if seed in TUNING_SEEDS else "other"
        head = f"## fresh-{seed} ({kind}) · pool {pool_size} · {target} · budget {budget:.0%}"
        start = zero.get((seed, pool_size, target))
        lines += [f"{head}; zero-shot test {100 * start[0]:.1f}" if start else head, "",
                  "| selector | seed | trained (budget + replay) | target test | generic | alpha kept | whole change: val / "
                  "forgetting | selection s | training s | leakage: same question / same image |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(group, key=lambda r: -(r["test"][-1] or 0)):
            leak = "—" if r["leak"] is None else f"{r['leak']['same_question']} / {r['leak']['same_image']} of {r['leak']['of']}"
            whole = whole_change(out, r) if r["selector"] not in ONCE else None
            kept = "—" if whole is None else f"{whole['chosen']:g}"
            change = "—" if whole is None else f"{100 * whole['val']:.1f} / {whole['forgetting']:+.1f}"
            lines.append(f"| {r['selector']} | {r.get('run_seed', 0)} | {r['selected']} | {100 * r['test'][-1]:.1f} | "
                         f"{100 * r['generic'][-1]:.1f} | {kept} | {change} | {r['selection_s']:.0f} | {r['train_s']:.0f} "
                         f"| {leak} |")
        lines.append("")
    lines += [f"Command: `{command}`", ""]
    return "\n".join(lines)


def pair(row: dict) -> tuple:
    """The world × target a row belongs to (the unit the summaries' spread is over)."""
    return row["world_seed"], row.get("pool_size", POOL_SIZE), row["target"]


def per_pair(group: list[dict], value) -> dict[tuple, list[float]]:
    """``value(row)`` of each row, by world × target (one entry per selection seed)."""
    by: dict[tuple, list[float]] = {}
    for r in group:
        v = value(r)
        if v is not None:
            by.setdefault(pair(r), []).append(v)
    return by


def summary_lines(held_out: list[dict], zero: dict, out: Path, pool_size: int) -> list[str]:
    """One row per selector over the held-out worlds and targets of one budget and pool size."""
    lines = ["| selector | pairs × seeds | target test | seed sd | forgetting | whole change: val / forgetting "
             "| selection s | training s | selection / training: seconds, FLOPs (est.) | selection / training saved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    full_pool = {pair(r): r["train_s"] for r in held_out if r["selector"] == "full-pool"}
    pairs = {pair(r) for r in held_out}
    test0 = [100 * zero[p][0] for p in sorted(pairs) if p in zero]
    if test0:
        spread = mean_sd(test0)
        lines.append(f"| zero-shot | {len(test0)} | {spread[0]:.1f} ± {spread[1]:.1f} | — | 0 | — | — | — | — | — |")
    for name in (*SELECTORS, *GUARDS):
        group = [r for r in held_out if r["selector"] == name]
        if not group:
            continue
        tests = per_pair(group, lambda r: 100 * r["test"][-1])
        test = mean_sd([statistics.fmean(v) for v in tests.values()])
        seed_sds = [statistics.stdev(v) for v in tests.values() if len(v) > 1]
        forgetting = mean_sd([statistics.fmean(v) for v in per_pair(
            group, lambda r: 100 * (zero[pair(r)][1] - r["generic"][-1]) if pair(r) in zero else None).values()])
        sel, train = statistics.fmean(r["selection_s"] for r in group), statistics.fmean(r["train_s"] for r in group)
        flops = [f for f in (flops_ratio(out, r, pool_size) for r in group) if f is not None]
        ratio = (f"{sel / train:.2f}" if train else "—") + (f", {statistics.fmean(flops):.2f}" if flops else "")
        wholes = [w for w in (whole_change(out, r) for r in group if name not in ONCE) if w is not None]
        whole = "—" if not wholes else (f"{statistics.fmean(100 * w['val'] for w in wholes):.1f} / "
                                        f"{statistics.fmean(w['forgetting'] for w in wholes):+.1f}")
        seeds = max(len(v) for v in tests.values())
        paired = [r for r in group if pair(r) in full_pool and name not in ONCE]
        saved = sum(full_pool[pair(r)] - r["train_s"] for r in paired)  # the full pool's training, less the round's
        against_saved = (f"{sum(r['selection_s'] for r in paired) / saved:.1%} (n = {len(paired)})"
                         if paired and saved > 0 else "—")
        lines.append(f"| {name} | {len(tests)}{f' × {seeds}' if seeds > 1 else ''} | {test[0]:.1f} ± {test[1]:.1f} | "
                     f"{f'{statistics.fmean(seed_sds):.1f}' if seed_sds else '—'} | {forgetting[0]:+.1f} ± "
                     f"{forgetting[1]:.1f} | {whole} | {sel:.0f} | {train:.0f} | {ratio} | {against_saved} |")
    return lines


def margin_lines(rows: list[dict]) -> list[str]:
    """The product's selectors (teacher, the default; failures, without a teacher) against the best peer and
    against the random rows, paired per world and target (each side its mean over the selection seeds it has)."""
    means = {name: {p: statistics.fmean(v) for p, v in per_pair([r for r in rows if r["selector"] == name],
                                                                lambda r: 100 * r["test"][-1]).items()}
             for name in (*SELECTORS, LENGTH_MATCHED)}
    lines = []
    for ours in ("teacher", "failures"):
        for label, names in (("the better of rds, less", ("rds", "less")), ("random", ("random",)),
                             (LENGTH_MATCHED, (LENGTH_MATCHED,))):
            diffs = [means[ours][p] - max(means[n][p] for n in names if p in means[n])
                     for p in sorted(means[ours]) if any(p in means[n] for n in names)]
            present = [n for n in names if means[n]]
            if diffs:
                margin = mean_sd(diffs)
                label = label if len(present) == len(names) else present[0]
                lines.append(f"{ours} − {label}, paired per world and target: {margin[0]:+.1f} ± {margin[1]:.1f} "
                             f"points (n = {len(diffs)}; {ours} ahead in {sum(d > 0 for d in diffs)})"
                             + ("; target: ≥ +3" if names == ("rds", "less") else ""))
    return [line + "  " for line in lines]


def _rows(path: Path) -> list[dict]:
    """The saved rows, one per key (two processes sharing the file may both finish one: the later is kept)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return list({key(r): r for r in rows}.values())


@contextlib.contextmanager
def cpu_teacher(wanted: bool):
    """The CPU teacher's URL while the block runs (None when no teacher row is wanted)."""
    if not wanted:
        yield None
        return
    from tutorloop.agents.cpu_teacher import serve_cpu_teacher

    with serve_cpu_teacher() as url:
        yield url


def run_rows(args: argparse.Namespace, wanted: list[str], rows_path: Path, teacher_url: str | None) -> None:
    for seed in (int(s) for s in args.seeds.split(",")):
        for world, target in fresh_worlds(seed, args.out, args.pool_size):
            for selector in wanted:
                for run_seed in (0,) if selector in ONCE else (int(s) for s in args.run_seeds.split(",")):
                    budget = 1.0 if selector == "full-pool" else args.budget
                    if (seed, args.pool_size, target.name, selector, budget, run_seed) in {
                            key(r) for r in _rows(rows_path)}:
                        continue  # another process may share the file: never run a row twice
                    row = (run_once(world, target, seed, selector, budget, args.out, args.pool_size)
                           if selector in ONCE else
                           run_selector(world, target, seed, selector, budget, args.out, run_seed, args.pool_size,
                                        teacher_url))
                    with rows_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    log.info("fresh-%d %s %s seed %d: test %s (%.0f s)", seed, target.name, selector, run_seed,
                             row["test"], row["wall_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=",".join(map(str, HELD_OUT_SEEDS)), help="world seeds (lab/worlds.py)")
    parser.add_argument("--selectors", default=",".join(SELECTORS),
                        help=f"rows to run, comma-separated, among {', '.join((*SELECTORS, *GUARDS))}")
    parser.add_argument("--budget", type=float, default=0.05, help="share of the pool selected")
    parser.add_argument("--run-seeds", default="0", help="selection seeds (the run's --seed), comma-separated")
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "peers")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "peers")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the rows saved")
    args = parser.parse_args(argv)
    wanted = args.selectors.split(",")
    unknown = [w for w in wanted if w not in (*SELECTORS, *GUARDS)]
    if unknown:
        parser.error(f"--selectors: unknown {', '.join(unknown)}; known: {', '.join((*SELECTORS, *GUARDS))}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.results.mkdir(parents=True, exist_ok=True)
    rows_path = args.results / "rows.jsonl"
    if not args.report:
        import torch

        torch.set_num_threads(1)
        with cpu_teacher("teacher" in wanted) as teacher_url:
            run_rows(args, wanted, rows_path, teacher_url)
    rows = _rows(rows_path)
    command = "benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.results / "peers.json").write_text(json.dumps({"rows": rows, "machine": machine()}, indent=1) + "\n")
    (args.results / "peers.md").write_text(markdown(rows, command, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
