"""`tutorloop demo`: the whole method on a CPU, offline, in minutes.

Builds (or reuses) the procedural demo world, its tiny pre-trained student and the pool index, then
runs the loop on one target task with the CPU teacher (llama.cpp + SmolLM2-135M) when the
``teacher-cpu`` extra is installed, else with ``--selector failures``. Ends with a before/after table
per skill and the paths of the diagnoses and the report.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the world, index and run go (default: runs/demo)")
    parser.add_argument("--target", default=None, help="target task of the demo world (default: the first one)")
    parser.add_argument("--pool-size", type=int, default=6000, help="samples in the generated pool (default: 6000)")
    parser.add_argument("--budget", type=int, default=600, help="samples selected over the run (default: 600)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the loop (default: 2)")
    parser.add_argument("--selector", choices=["teacher", "failures", "random"],
                        help="default: teacher when the CPU teacher is installed, else failures")
    parser.add_argument("--max-diagnoses", type=int, default=8,
                        help="failures the CPU teacher diagnoses per round (SmolLM2 takes ~10 s each; default: 8)")
    parser.add_argument("--known-share", type=float, default=0.3,
                        help="share of each round replaying pool samples the student already answers right, "
                             "against forgetting (default: 0.3; 0 for the plain loop)")
    parser.add_argument("--seed", type=int, default=0, help="seed of world, student and selection (default: 0)")


def run(args: argparse.Namespace) -> int:
    from agents.cmd_run import execute, print_summary
    from agents.config import RunConfig
    from agents.cpu_teacher import cpu_teacher_available, serve_cpu_teacher
    from demo.build import build_world

    console = Console()
    world = build_world(args.out / "world", pool_size=args.pool_size, seed=args.seed)
    target = args.target or next(iter(world.targets))
    val, test = world.targets[target]
    store = ensure_index(world.pool, world.image_root, args.out / "index")

    selector = args.selector or ("teacher" if cpu_teacher_available() else "failures")
    if selector == "teacher" and not cpu_teacher_available():
        console.print("[yellow]The CPU teacher is not installed (pip install -e '.[teacher-cpu]'); "
                      "using --selector failures.[/yellow]")
        selector = "failures"
    out = args.out / f"run-{target}-{selector}"
    teacher_server = serve_cpu_teacher() if selector == "teacher" else contextlib.nullcontext(None)
    with teacher_server as teacher_url:
        # SmolLM2 reads no images and speaks llama.cpp's json_object dialect; one request at a time is all
        # llama-cpp-python's server runs, so a few in flight only hide the HTTP round trips.
        teacher = {"send_images": False, "dialect": "json_object", "concurrency": 2, "max_tokens": 192}
        if teacher_url:
            teacher["base_url"] = teacher_url
        config = RunConfig(student=world.student, val=val, test=test, generic=world.generic, store=store,
                           budget=args.budget, rounds=args.rounds, selector=selector, seed=args.seed, out=out,
                           teacher=teacher, max_diagnoses=args.max_diagnoses, known_share=args.known_share)
        summary = execute(config, run_id=f"demo-{target}-{selector}-{args.seed}")
    print_summary(summary, out)
    console.print(before_after_table(out))
    console.print(f"diagnoses: tutorloop review {out}    report: {out / 'summary.json'}")
    return 0


def ensure_index(pool: Path, image_root: Path, store: Path) -> Path:
    """Index the pool once; a later demo reuses it (re-indexing is idempotent, but costs minutes)."""
    from retrieval.embed import DEFAULT_EMBEDDER, load_embedder
    from retrieval.index import PoolIndex, index_pool

    if (store / ".complete").exists():
        return store
    index = PoolIndex.open(store=store)
    try:
        report = index_pool(pool, index=index, embedder=load_embedder(), embedder_name=DEFAULT_EMBEDDER,
                            image_root=image_root, quarantine_path=store / "quarantine.jsonl", progress=True)
    finally:
        index.close()
    counts = report.counts
    print(f"indexed {counts['accepted']} of {counts['read']} pool samples ({report.k} clusters)", file=sys.stderr)
    (store / ".complete").write_text("ok\n")
    return store


def before_after_table(run_dir: Path) -> Table:
    from agents.run_dir import read_json

    done = sorted(run_dir.glob("round_*/metrics.json"))
    before, after = read_json(done[0]), read_json(done[-1])
    table = Table(title=f"accuracy per skill: before → after {len(done) - 1} round(s)")
    for column in ("split", "skill", "before", "after", "change"):
        table.add_column(column, justify="right" if column in {"before", "after", "change"} else "left")
    for split in ("test", "generic"):
        for skill, acc in sorted((before.get(f"{split}_by_source") or {}).items()):
            new = after[f"{split}_by_source"][skill]
            old_acc, new_acc = _acc(acc), _acc(new)
            table.add_row(split, skill, f"{100 * old_acc:.1f}%", f"{100 * new_acc:.1f}%", f"{100 * (new_acc - old_acc):+.1f}")
    return table


def _acc(entry: float | dict) -> float:
    return entry["accuracy"] if isinstance(entry, dict) else float(entry)
