"""`tutorloop demo`: the whole method on a CPU, offline, in minutes.

Builds (or reuses) the procedural demo world, its tiny pre-trained student and the pool index, then
runs the loop on one target task with the CPU teacher (llama.cpp + SmolLM2-135M) when the
``teacher-cpu`` extra is installed, else with ``--selector failures``. The teacher's diagnoses are
grounded in a skill map of the pool named by its samples' own source tags (``--skill-map off``: free;
a map already beside the index, say one built with ``tutorloop skills --teacher``, is kept). Ends with a
before/after table per skill, and writes the HTML review report (``RUNDIR/report.html``) and prints its
path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tutorloop.agents.selectors import SELECTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the world, index and run go (default: runs/demo)")
    parser.add_argument("--target", default=None, help="target task of the demo world (default: the first one)")
    parser.add_argument("--pool-size", type=int, default=6000, help="samples in the generated pool (default: 6000)")
    # 5 % of the default pool: the budget the product's defaults are measured at (docs/results.md)
    parser.add_argument("--budget", type=int, default=300, help="samples selected over the run (default: 300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the loop (default: 2)")
    parser.add_argument("--selector", choices=list(SELECTORS),
                        help="default: teacher when the CPU teacher is installed, else failures")
    parser.add_argument("--max-diagnoses", type=int, default=8,
                        help="failures the CPU teacher diagnoses per round (SmolLM2 takes ~10 s each; default: 8)")
    parser.add_argument("--known-share", type=float,
                        help="known samples replayed per selected sample, on top of the budget, against forgetting "
                             "(default: tutorloop run's, 1; 0 for the plain loop)")
    parser.add_argument("--skill-map", choices=["tags", "off"], default="tags",
                        help="teacher runs: ground the diagnoses in a skill map named by the pool's own source "
                             "tags (tags, the default: SmolLM2's own names for the clusters are not usable), "
                             "or let the teacher name skills freely (off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of world, student and selection (default: 0)")
    parser.add_argument("--approve", action="store_true",
                        help="stop after each round's plan until a person decides it: tutorloop approve RUNDIR "
                             "--no-resume [--drop GAP], then this command again to go on (it starts the teacher)")
    parser.add_argument("--rebuild-student", action="store_true",
                        help="pre-train the demo student here (15-50 CPU minutes) instead of using the shipped "
                             "weights, and say how close the rebuild is to them")


def rebuilt_student_table(cache: Path, seed: int) -> Table:
    """Pre-train the demo student into ``cache`` and compare its held-out accuracy per skill with the shipped one."""
    from tutorloop.demo.student import SHIPPED, build_student

    rebuilt = build_student(cache, seed, rebuild=True)
    mine = json.loads((rebuilt / "skills.json").read_text())["accuracy"]
    shipped_file = SHIPPED / rebuilt.name / "skills.json"
    theirs = json.loads(shipped_file.read_text())["accuracy"] if shipped_file.is_file() else {}
    table = Table(title=f"rebuilt student {rebuilt.name} against the shipped one (held-out accuracy per skill)")
    for column in ("group", "skill", "shipped", "rebuilt", "change"):
        table.add_column(column, justify="left" if column in {"group", "skill"} else "right")
    for group in ("generic", "targets"):
        for skill, value in sorted(mine.get(group, {}).items()):
            old = theirs.get(group, {}).get(skill)
            table.add_row(group, skill, "—" if old is None else f"{old:.2f}", f"{value:.2f}",
                          "—" if old is None else f"{100 * (value - old):+.0f}")
    return table


def run(args: argparse.Namespace) -> int:
    from tutorloop.agents import api
    from tutorloop.agents.cpu_teacher import cpu_teacher_available, serve_cpu_teacher
    from tutorloop.agents.report import build_report
    from tutorloop.agents.run_dir import RunDir
    from tutorloop.agents.tables import before_after_table, summary_table
    from tutorloop.demo.build import build_world

    console = Console()
    if args.rebuild_student:
        console.print(rebuilt_student_table(args.out / "world" / "students", args.seed))  # build_world's cache
    world = build_world(args.out / "world", pool_size=args.pool_size, seed=args.seed)
    target = args.target or next(iter(world.targets))
    val, test = world.targets[target]
    store = api.ensure_index(api.IndexConfig(pool=world.pool, image_root=world.image_root, store=args.out / "index"),
                               rebuild=True)  # the demo's own store: rebuilt when its world is

    selector = args.selector or ("teacher" if cpu_teacher_available() else "failures")
    if SELECTORS[selector].needs_teacher and not cpu_teacher_available():
        console.print("[yellow]The CPU teacher is not installed (pip install -e '.[teacher-cpu]'); "
                      "using --selector failures.[/yellow]")
        selector = "failures"
    out = args.out / f"run-{target}-{selector}"
    grounded = SELECTORS[selector].needs_teacher and args.skill_map == "tags"
    if grounded:  # no teacher call: each fine cluster takes its points' most common source tag
        api.ensure_skill_map(store, names_from="source")
    teacher_server = serve_cpu_teacher() if SELECTORS[selector].needs_teacher else contextlib.nullcontext(None)
    with teacher_server as teacher_url:
        # SmolLM2 reads no images and speaks llama.cpp's json_object dialect; one request at a time is all
        # llama-cpp-python's server runs, so a few in flight only hide the HTTP round trips.
        # Grounded, it chooses among the 3 map skills nearest the failure: among 24 it chose the same
        # off-target skill for every failure (README "The teacher and the skill map").
        teacher = {"send_images": False, "dialect": "json_object", "concurrency": 2, "max_tokens": 192,
                   "skill_map": "auto" if grounded else "off", "map_skills_shown": 3}
        if teacher_url:
            teacher["base_url"] = teacher_url
        config = api.RunConfig(student=world.student, val=val, test=test, generic=world.generic, store=store,
                               budget=args.budget, rounds=args.rounds, selector=selector, seed=args.seed, out=out,
                               teacher=teacher, max_diagnoses=args.max_diagnoses,
                               approve=args.approve,
                               **({} if args.known_share is None else {"known_share": args.known_share}))
        summary = api.run(config, run_id=f"demo-{target}-{selector}-{args.seed}")
    waiting = RunDir(out).waiting_for_approval()
    if waiting is not None:
        report = build_report([out], out / "report.html")
        console.print(f"round {waiting} waits for approval: open {report} (the plan, each gap's failures and the "
                      f"samples it would buy), then: tutorloop approve {out} --no-resume [--drop GAP] "
                      f"[--weight GAP=W]; then run this command again to go on")
        return 0
    console.print(summary_table(summary))
    console.print(before_after_table(RunDir(out)))
    report = build_report([out], out / "report.html")
    console.print(f"stopped: {summary.stop_reason}. Diagnoses: tutorloop review {out}    "
                  f"summary: {out / 'summary.json'}")
    console.print(f"report (open in a browser, works offline): {report}")
    return 0
