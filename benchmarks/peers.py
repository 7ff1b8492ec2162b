"""Measured against the field: our selectors and the published ones (RDS+, LESS) at equal budget, on fresh
worlds drawn from held-out seeds (lab/worlds.py), with the guards the literature asks for.

One ``tutorloop run`` per world, target and selector at the same budget; everything else is the product's
default (the held-out stop, known replay on top, the operating point within 1 point of forgetting). Per run:
the target's test accuracy, forgetting on the world's generic split, the selection's seconds (every stage
but training and evaluation: for rds the student's vectors of the pool, for less its warm-up and gradients)
against the training seconds, and a leakage check of the selected samples against the test split (the same
question text; the same image bytes). Guards in every table: zero-shot, random at equal budget, the
target-data ceiling (``--target-data``: fresh samples of the target itself, trained once).

    .venv/bin/python benchmarks/peers.py --seeds 101,102,103 --selectors random,failures,rds,less --target-data
    .venv/bin/python benchmarks/peers.py --report

Results: ``benchmarks/results/peers/peers.{json,md}`` and ``rows.jsonl``; the runs stay under ``--out``.
"""

from __future__ import annotations

import argparse
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
from lab.worlds import HELD_OUT_SEEDS, TUNING_SEEDS, FreshTarget, build_fresh_world, draw_world  # noqa: E402

log = logging.getLogger("benchmarks.peers")
DEFAULTS = {"known_share": 1.0, "known_on_top": True, **OP}  # the product's retention defaults
SELECTORS = ("random", "failures", "rds", "less")
NOT_SELECTION = {"train", "evaluate", "operating_point", "replay"}
POOL_SIZES: dict[int, int] = {}  # world seed -> pool size, filled as worlds are built (3000 when the report alone runs)


def shipped_student(out: Path) -> Path:
    from tutorloop.demo.student import build_student

    return build_student(out / "students", seed=0, progress=False)


def fresh_worlds(seed: int, out: Path, pool_size: int) -> list[tuple[World, FreshTarget]]:
    world = draw_world(seed, pool_size)
    POOL_SIZES[seed] = pool_size
    paths = build_fresh_world(world, out / world.name / "world", shipped_student(out))
    return [(indexed_world(t.name, paths, paths.student, (f"{t.skill}-v1",), paths.root), t) for t in world.targets]


def run_selector(world: World, target: FreshTarget, seed: int, selector: str, budget: float, out: Path) -> dict:
    from tutorloop.agents.run_dir import METRICS, SELECTED, RunDir

    task_dir = out / f"fresh-{seed}" / target.name
    began = time.perf_counter()
    run = RunDir(run_strategy(world, Strategy(selector, selector, run=DEFAULTS), budget, 0, task_dir,
                              settings_for(1), None))
    rounds = run.rounds_done()
    history = [run.read(n, METRICS) for n in rounds]
    seconds = [run.seconds(n) for n in rounds[1:]]
    selected = [row.sample for n in rounds[1:] for row in run.read(n, SELECTED)]
    return {
        "world_seed": seed, "target": target.name, "kind": target.kind, "selector": selector, "budget": budget,
        "test": [m.test_accuracy for m in history], "generic": [m.generic_accuracy for m in history],
        "selected": len(selected),
        "selection_s": round(sum(v for s in seconds for k, v in s.items() if k not in NOT_SELECTION), 1),
        "train_s": round(sum(s.get("train", 0.0) for s in seconds), 1),
        "leak": leakage(selected, world), "wall_s": round(time.perf_counter() - began, 1),
    }


def run_target_data(world: World, target: FreshTarget, seed: int, budget: float, out: Path) -> dict:
    """The ceiling: the budget spent on fresh samples of the target itself (new scenes), trained once."""
    from benchmarks.selection import lora_once
    from tutorloop.demo.pool import write_clean
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.configs import RoundLoraConfig
    from tutorloop.training.lora import HeldOut

    folder = out / f"fresh-{seed}" / target.name / "target-data"
    result = folder / "result.json"
    if not result.exists():
        n = max(1, round(budget * world.pool_count))
        data = write_clean(folder / "data" / "train.jsonl", (target.skill,), n, seed + 7,
                           templates={target.skill: target.templates}, id_prefix="target-data")
        began = time.perf_counter()
        held_out = HeldOut(load_samples(world.val), world.val.parent)  # the loop's stop: the val split's loss
        _, metrics, train_s, _ = lora_once(world, load_samples(data), RoundLoraConfig(seed=1), folder,
                                           settings_for(1), image_root=data.parent, held_out=held_out)
        result.write_text(json.dumps({"test": metrics["test_accuracy"], "generic": metrics["generic_accuracy"],
                                      "train_s": train_s,
                                      "n": n, "wall_s": round(time.perf_counter() - began, 1)}) + "\n")
    done = json.loads(result.read_text())
    return {"world_seed": seed, "target": target.name, "kind": target.kind, "selector": "target-data",
            "budget": budget, "test": [None, done["test"]], "generic": [None, done["generic"]], "selected": done["n"],
            "selection_s": 0.0, "train_s": done["train_s"], "leak": None, "wall_s": done["wall_s"]}


def run_of(out: Path, row: dict):
    """The run directory of a row (where benchmarks.selection.run_strategy put it)."""
    from tutorloop.agents.run_dir import RunDir

    return RunDir(out / f"fresh-{row['world_seed']}" / row["target"] / "seed0" / f"{row['selector']}-b{row['budget']:g}")


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
    sample and per failure; training: every trained sample in every epoch run. The others select with the text
    embedder, whose cost next to the student's is left out (0)."""
    from tutorloop.agents.run_dir import DIAGNOSES

    if row["selector"] in ("target-data",):
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
             f"(reported here), tuning seeds {list(TUNING_SEEDS)}. One run per world, target and selector; the "
             "product's defaults otherwise. Accuracies in %; forgetting = generic points lost against the student "
             "as given; selection s = every stage but training and evaluation. Alpha kept: the share of round 1's "
             "trained change the operating point kept within 1 point of forgetting (0: the start); whole change: "
             "val accuracy and forgetting had the change been kept whole. Leakage counts trained samples whose "
             "question text equals a test question (the worlds are templated: a `plain` target asks in the pool's "
             "own phrasings) and whose image bytes equal a test image's (a test item in the pool).", ""]
    zero_generic = {(r["world_seed"], r["target"]): r["generic"][0] for r in rows if r["generic"][0] is not None}
    for budget in sorted({r["budget"] for r in rows}):
        held_out = [r for r in rows if r["world_seed"] in HELD_OUT_SEEDS and r["budget"] == budget]
        if held_out:
            lines += [f"## Budget {budget:.0%}: over the held-out worlds (mean ± sd over world × target)", "",
                      *summary_lines(held_out, rows, zero_generic, out), "", *margin_lines(held_out), ""]
    for seed, target, budget in sorted({(r["world_seed"], r["target"], r["budget"]) for r in rows}):
        group = [r for r in rows if (r["world_seed"], r["target"], r["budget"]) == (seed, target, budget)]
        zero = next((r["test"][0] for r in rows if (r["world_seed"], r["target"]) == (seed, target)
                     and r["test"][0] is not None), None)
        kind = "held-out" if seed in HELD_OUT_SEEDS else "tuning" if seed in TUNING_SEEDS else "other"
        head = f"## fresh-{seed} ({kind}) · {target} · budget {budget:.0%}"
        lines += [f"{head}; zero-shot test {100 * zero:.1f}" if zero is not None else head, "",
                  "| selector | trained (budget + replay) | target test | generic | alpha kept | whole change: val / forgetting | "
                  "selection s | training s | leakage: same question / same image |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(group, key=lambda r: -(r["test"][-1] or 0)):
            leak = "—" if r["leak"] is None else f"{r['leak']['same_question']} / {r['leak']['same_image']} of {r['leak']['of']}"
            whole = whole_change(out, r) if r["selector"] != "target-data" else None
            kept = "—" if whole is None else f"{whole['chosen']:g}"
            change = "—" if whole is None else f"{100 * whole['val']:.1f} / {whole['forgetting']:+.1f}"
            lines.append(f"| {r['selector']} | {r['selected']} | {100 * r['test'][-1]:.1f} | {100 * r['generic'][-1]:.1f} | "
                         f"{kept} | {change} | {r['selection_s']:.0f} | {r['train_s']:.0f} | {leak} |")
        lines.append("")
    lines += [f"Command: `{command}`", ""]
    return "\n".join(lines)


def summary_lines(held_out: list[dict], rows: list[dict], zero_generic: dict, out: Path) -> list[str]:
    """One row per selector over the held-out worlds and targets of one budget; zero-shot from every run."""
    lines = ["| selector | n | target test | forgetting | whole change: val / forgetting | selection s | training s "
             "| selection / training: seconds, FLOPs (est.) |", "|---|---|---|---|---|---|---|---|"]
    keys = {(r["world_seed"], r["target"]) for r in held_out}
    for name in ("zero-shot", *SELECTORS, "target-data"):
        if name == "zero-shot":
            group = list({(r["world_seed"], r["target"]): r for r in rows if (r["world_seed"], r["target"]) in keys
                          and r["test"][0] is not None}.values())
        else:
            group = [r for r in held_out if r["selector"] == name]
        if not group:
            continue
        if name == "zero-shot":
            test, forgetting, sel, train = mean_sd([100 * r["test"][0] for r in group]), (0.0, 0.0), 0.0, 0.0
        else:
            test = mean_sd([100 * r["test"][-1] for r in group])
            forgetting = mean_sd([100 * (zero_generic[(r["world_seed"], r["target"])] - r["generic"][-1])
                                  for r in group if (r["world_seed"], r["target"]) in zero_generic])
            sel, train = statistics.fmean(r["selection_s"] for r in group), statistics.fmean(r["train_s"] for r in group)
        flops = [f for f in (flops_ratio(out, r, POOL_SIZES.get(r["world_seed"], 3000)) for r in group
                             if name != "zero-shot") if f is not None]
        ratio = (f"{sel / train:.2f}" if train else "—") + (f", {statistics.fmean(flops):.2f}" if flops else "")
        wholes = [w for w in (whole_change(out, r) for r in group if name not in ("zero-shot", "target-data"))
                  if w is not None]
        whole = "—" if not wholes else (f"{statistics.fmean(100 * w['val'] for w in wholes):.1f} / "
                                        f"{statistics.fmean(w['forgetting'] for w in wholes):+.1f}")
        lines.append(f"| {name} | {len(group)} | {test[0]:.1f} ± {test[1]:.1f} | {forgetting[0]:+.1f} ± "
                     f"{forgetting[1]:.1f} | {whole} | {sel:.0f} | {train:.0f} | {ratio} |")
    return lines


def margin_lines(rows: list[dict]) -> list[str]:
    """The product's no-teacher selector against the best peer measured, per world and target (paired)."""
    pairs, named = [], set()
    for key in sorted({(r["world_seed"], r["target"]) for r in rows}):
        by = {r["selector"]: 100 * r["test"][-1] for r in rows if (r["world_seed"], r["target"]) == key}
        peers = {p: by[p] for p in ("rds", "less") if p in by}
        if "failures" in by and peers:
            pairs.append(by["failures"] - max(peers.values()))
            named |= set(peers)
    if not pairs:
        return []
    margin = mean_sd(pairs)
    return [f"failures − the better of ({', '.join(sorted(named))}), paired per world and target: {margin[0]:+.1f} ± "
            f"{margin[1]:.1f} points (n = {len(pairs)}; target: ≥ +3)"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=",".join(map(str, HELD_OUT_SEEDS)), help="world seeds (lab/worlds.py)")
    parser.add_argument("--selectors", default=",".join(SELECTORS))
    parser.add_argument("--budget", type=float, default=0.05, help="share of the pool selected")
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--target-data", action="store_true", help="also the ceiling: the target's own samples")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "peers")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "peers")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the rows saved")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.results.mkdir(parents=True, exist_ok=True)
    rows_path = args.results / "rows.jsonl"
    if not args.report:
        import torch

        torch.set_num_threads(1)
        for seed in (int(s) for s in args.seeds.split(",")):
            for world, target in fresh_worlds(seed, args.out, args.pool_size):
                wanted = [*args.selectors.split(","), *(["target-data"] if args.target_data else [])]
                for selector in wanted:
                    done = {(r["world_seed"], r["target"], r["selector"], r["budget"]) for r in _rows(rows_path)}
                    if (seed, target.name, selector, args.budget) in done:
                        continue  # another process may share the file: never run a row twice
                    row = (run_target_data(world, target, seed, args.budget, args.out) if selector == "target-data"
                           else run_selector(world, target, seed, selector, args.budget, args.out))
                    with rows_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    log.info("fresh-%d %s %s: test %s (%.0f s)", seed, target.name, selector, row["test"],
                             row["wall_s"])
    rows = _rows(rows_path)
    command = "benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.results / "peers.json").write_text(json.dumps({"rows": rows, "machine": machine()}, indent=1) + "\n")
    (args.results / "peers.md").write_text(markdown(rows, command, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
