"""The learning-forgetting front: what each way of keeping old skills costs the target, on every world.

One ``tutorloop run --selector failures`` per arm, world and seed at the same budget (a share of the pool over
``--rounds``); everything but the arm's retention settings is the product's default. Each run reports the
target test accuracy and the forgetting on the world's generic split (points lost against the student as
given). Arms (``ARMS``, data): no retention; known replay at several shares; anchors at several weights;
attention-only LoRA; LoRA rank; and each of those with the operating point chosen under the forgetting bound
(``-op``). Worlds: ``tuning`` ones (defaults are chosen there) and ``held-out`` ones (reported, never tuned on).

    .venv/bin/python benchmarks/front.py --worlds digits,side-colour --arms none,none-op --seeds 0,1,2
    .venv/bin/python benchmarks/front.py --report   # tables + plot from the runs already made

Results: ``benchmarks/results/front/front.{json,md,png}``; every run stays under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.selection import Settings, Strategy, World, indexed_world, run_strategy  # noqa: E402

log = logging.getLogger("benchmarks.front")
OP = {"operating_points": [0.25, 0.5, 0.75, 1.0], "max_forgetting": 1.0}  # the product's defaults
NONE = {"known_share": 0.0}
NO_ANCHORS = {"anchor_weight": 0.0}
ATTENTION = r"^(?!.*(vision|visual|connector|multi_modal_projector)).*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)$"


@dataclass(frozen=True)
class Arm:
    name: str
    run: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    help: str = ""


def _arms() -> tuple[Arm, ...]:
    base = [
        Arm("none", NONE, NO_ANCHORS, "no retention: the gaps' samples alone"),
        Arm("known-0.3", {"known_share": 0.3}, NO_ANCHORS, "30 % of the budget replays samples the student knows"),
        Arm("known-0.5", {"known_share": 0.5}, NO_ANCHORS, "50 % known replay"),
        Arm("anchors-1", NONE, {"anchor_weight": 1.0}, "KL to the untouched student on a pool draw, weight 1"),
        Arm("anchors-3", NONE, {"anchor_weight": 3.0}, "anchors, weight 3"),
        Arm("known-0.3+anchors-1", {"known_share": 0.3}, {"anchor_weight": 1.0}, "both"),
        Arm("top-0.5", {"known_share": 0.5, "known_on_top": True}, NO_ANCHORS,
            "known replay on top of the budget: 1 known sample per 2 selected"),
        Arm("top-1", {"known_share": 1.0, "known_on_top": True}, NO_ANCHORS, "known replay on top, 1:1"),
        Arm("top-1+anchors-1", {"known_share": 1.0, "known_on_top": True}, {"anchor_weight": 1.0},
            "known replay on top 1:1, and anchors"),
        Arm("attention", NONE, {**NO_ANCHORS, "target": ATTENTION}, "LoRA on attention only, no retention"),
        Arm("rank-2", NONE, {**NO_ANCHORS, "rank": 2, "alpha": 4}, "LoRA rank 2, no retention"),
    ]
    return (*base, *(Arm(f"{a.name}-op", {**a.run, **OP}, a.lora, f"{a.help}; then the operating point within 1 "
                                                                   "point") for a in base))


ARMS = {a.name: a for a in _arms()}
TUNING = ("side-colour", "corner-colour")  # shapes targets the defaults are chosen on
HELD_OUT = ("digits", "side-colour-choice")  # reported, never tuned on


def world_of(name: str, out: Path, students: Path) -> World:
    if name == "digits":
        from tutorloop.demo.digits import TARGET, TARGET_SKILL, build_digits_world

        paths = build_digits_world(out / "digits" / "world", student_cache=students, progress=False)
        return indexed_world(TARGET, paths, Path(paths.student), (f"{TARGET_SKILL}-v1",), paths.root)
    from tutorloop.demo.build import build_world
    from tutorloop.demo.targets import TARGETS
    from tutorloop.demo.world import SKILLS

    paths = build_world(out / "shapes" / "world", pool_size=6000, targets=list((*TUNING, HELD_OUT[1])), n_val=200,
                        n_test=500, n_generic_per_skill=50, student_cache=students, progress=False)
    sources = tuple(sorted({SKILLS[p].source for s in TARGETS[name].skills for p in SKILLS[s].taught_by}))
    return indexed_world(name, paths, Path(paths.student), sources, paths.root)


def settings_for(rounds: int) -> Settings:
    """The product's round recipe (held-out stop, relevance-only re-rank); only retention differs by arm."""
    return Settings(pool_size=0, n_val=0, n_test=0, n_generic_per_skill=0, rounds=rounds, epochs=20, batch_size=16,
                    max_diagnoses=200, eval_batch_size=32, max_new_tokens=16, perturbation_draws=3, quick=False,
                    early_stop=True, scorer="none")


def run_arm(world: World, arm: Arm, seed: int, budget: float, rounds: int, out: Path, probe: bool = False) -> dict:
    """One run of ``arm``. ``probe``: the loop gets no generic split (it measures forgetting on its own pool probe,
    as a user without one runs it) and the generic split is measured here, after the run: the forgetting
    reported is then on a split the operating point was not chosen on."""
    from tutorloop.agents.run_dir import FRONT, METRICS, RunDir

    strategy = Strategy(arm.name, "failures", run={**arm.run, **({"generic": None} if probe else {})}, lora=arm.lora)
    task_dir = out / f"{world.task}-r{rounds}{'-probe' if probe else ''}"
    began = time.perf_counter()
    run_dir = RunDir(run_strategy(world, strategy, budget, seed, task_dir, settings_for(rounds), None))
    rounds_done = run_dir.rounds_done()
    history = [run_dir.read(n, METRICS) for n in rounds_done]
    generic = [m.generic_accuracy for m in history]
    if probe:
        generic = [generic_accuracy(world, None, task_dir / "zero-shot"), generic_accuracy(
            world, run_dir.adapter(rounds_done[-1]), run_dir.root)]
    fronts = [run_dir.read(n, FRONT).model_dump() if run_dir.has(n, FRONT) else None for n in rounds_done[1:]]
    train = [run_dir.training(n) for n in rounds_done[1:]]
    return {
        "world": world.task, "arm": arm.name, "seed": seed, "rounds": rounds, "budget": budget,
        "test": [m.test_accuracy for m in history], "val": [m.val_accuracy for m in history],
        "generic": generic, "probe": probe, "probe_accuracy": [m.probe_accuracy for m in history],
        "alpha": [m.alpha for m in history[1:]], "kept_start": [m.kept_start for m in history[1:]],
        "train_s": [t.get("seconds", 0.0) for t in train],
        "operating_point_s": [run_dir.seconds(n).get("operating_point", 0.0) for n in rounds_done[1:]],
        "fronts": fronts, "wall_s": round(time.perf_counter() - began, 1),
    }


def generic_accuracy(world: World, adapter: Path | None, folder: Path) -> float:
    """The world's generic split measured on the student (with ``adapter``), cached in ``folder``."""
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.evaluate import evaluate
    from tutorloop.training.student import load_student

    cache = folder / "benchmark_generic.json"
    if cache.exists():
        return json.loads(cache.read_text())["accuracy"]
    student = load_student(world.student, adapter=adapter)
    result = evaluate(student, load_samples(world.generic), world.generic.parent, batch_size=32, max_new_tokens=16,
                      progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"accuracy": result.summary["accuracy"], "adapter": str(adapter)}) + "\n")
    return result.summary["accuracy"]


# --- the report ----------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict]) -> list[dict]:
    """Per world, rounds and arm: target test accuracy and forgetting after the last round (mean, sd over seeds),
    the lowest round-over-round change of target val, and the operating-point cost against training."""
    out = []
    for key in sorted({(r["world"], r["rounds"], r["arm"], r.get("probe", False)) for r in rows}):
        group = [r for r in rows if (r["world"], r["rounds"], r["arm"], r.get("probe", False)) == key]
        test = mean_sd([100 * r["test"][-1] for r in group])
        forgetting = mean_sd([100 * (r["generic"][0] - r["generic"][-1]) for r in group])
        worst_round = min(100 * (b - a) for r in group for a, b in zip(r["val"][1:], r["val"][2:], strict=False)) \
            if key[1] > 1 else None
        op = sum(sum(r["operating_point_s"]) for r in group)
        train = sum(sum(r["train_s"]) for r in group)
        out.append({"world": key[0], "rounds": key[1], "arm": key[2], "probe": key[3], "n": len(group), "test": test,
                    "forgetting": forgetting, "zero_shot_test": 100 * group[0]["test"][0],
                    "worst_round_val_change": worst_round, "op_over_train": op / train if train else None,
                    "alphas": [r["alpha"] for r in group]})
    return out


def markdown(entries: list[dict], command: str, machine: str, budget: float) -> str:
    lines = [f"# Learning–forgetting front ({time.strftime('%Y-%m-%d')})", "",
             f"`--selector failures`, budget {budget:g} of the pool, the product's round recipe; only retention "
             "differs. Mean ± sample sd over seeds. Forgetting = generic accuracy points lost against the student as "
             f"given (lower is better). Machine: {machine}.", "",
             f"Tuning worlds: {', '.join(TUNING)}; held-out worlds: {', '.join(HELD_OUT)}.", ""]
    for world, rounds, probe in sorted({(e["world"], e["rounds"], e["probe"]) for e in entries}):
        group = [e for e in entries if (e["world"], e["rounds"], e["probe"]) == (world, rounds, probe)]
        kind = "held-out" if world in HELD_OUT or world.startswith("next-digit") else "tuning"
        how = ("operating point chosen on the loop's pool probe; forgetting measured on the generic split after the "
               "run" if probe else "operating point chosen and forgetting measured on the same generic split")
        lines += [f"## {world} ({kind}), {rounds} round(s); zero-shot target test {group[0]['zero_shot_test']:.1f}", "",
                  how, "",
                  "| arm | n | target test | forgetting | worst round-over-round val change | operating point s / training s | alpha kept (per seed) |",
                  "|---|---|---|---|---|---|---|"]
        for e in sorted(group, key=lambda e: -e["test"][0]):
            worst = "—" if e["worst_round_val_change"] is None else f"{e['worst_round_val_change']:+.1f}"
            ratio = "—" if not e["op_over_train"] else f"{e['op_over_train']:.2f}"
            lines.append(f"| {e['arm']} | {e['n']} | {e['test'][0]:.1f} ± {e['test'][1]:.1f} | "
                         f"{e['forgetting'][0]:+.1f} ± {e['forgetting'][1]:.1f} | {worst} | {ratio} | {e['alphas']} |")
        lines.append("")
    lines += [f"Command: `{command}`", ""]
    return "\n".join(lines)


def plot(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(e["world"], e["rounds"], e["probe"]) for e in entries})
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (world, rounds, probe) in zip(axes.flat, panels, strict=False):
        for e in (e for e in entries if (e["world"], e["rounds"], e["probe"]) == (world, rounds, probe)):
            marker = "o" if e["arm"].endswith("-op") else "s"
            ax.errorbar(e["forgetting"][0], e["test"][0], xerr=e["forgetting"][1], yerr=e["test"][1], fmt=marker,
                        capsize=2)
            ax.annotate(e["arm"], (e["forgetting"][0], e["test"][0]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{world}, {rounds} round(s){', probe-chosen' if probe else ''}", fontsize=9)
        ax.set_xlabel("forgetting (generic points lost)")
        ax.set_ylabel("target test accuracy (%)")
    fig.suptitle("learning–forgetting front (o: operating point within 1 point; s: trained adapter kept whole)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch threads 1"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", default=",".join((*TUNING, *HELD_OUT)))
    parser.add_argument("--arms", default=",".join(ARMS), help=f"of: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=0.05, help="share of the pool selected over the run")
    parser.add_argument("--rounds", default="1", help="comma list: a run of each")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "front")
    parser.add_argument("--students", type=Path, default=ROOT / "runs" / "students")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "front")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the rows saved")
    parser.add_argument("--probe", action="store_true", help="the loop chooses on its pool probe; the generic split "
                        "is measured after the run (an unbiased forgetting)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.results.mkdir(parents=True, exist_ok=True)
    rows_path = args.results / "rows.jsonl"
    rows = _rows(rows_path)
    if not args.report:
        import torch

        torch.set_num_threads(1)
        unknown = sorted(set(args.arms.split(",")) - set(ARMS))
        if unknown:
            parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
        for world_name in args.worlds.split(","):
            world = world_of(world_name, args.out, args.students)
            for rounds in (int(r) for r in args.rounds.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    for arm_name in args.arms.split(","):
                        rows = _rows(rows_path)  # another process may share the file: never run a row twice
                        done = {(r["world"], r["arm"], r["seed"], r["rounds"], r.get("probe", False)) for r in rows}
                        if (world.task, arm_name, seed, rounds, args.probe) in done:
                            continue
                        row = run_arm(world, ARMS[arm_name], seed, args.budget, rounds, args.out, args.probe)
                        rows.append(row)
                        with rows_path.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        log.info("%s r%d %s seed %d: test %s, generic %s (%.0f s)", world.task, rounds, arm_name,
                                 seed, row["test"], row["generic"], row["wall_s"])
    entries = table(rows)
    command = "benchmarks/front.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.results / "front.json").write_text(json.dumps({"table": entries, "machine": machine()}, indent=1) + "\n")
    (args.results / "front.md").write_text(markdown(entries, command, machine(), args.budget))
    if entries:
        plot(entries, args.results / "front.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
