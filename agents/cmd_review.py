"""`tutorloop review RUNDIR [RUNDIR_B] [--round N] [--html [FILE]]`: the teacher's diagnoses, as a person
reads them.

In the terminal: per round, one row per failure (question, reference, the student's answer, the erroneous
step, the missing skill, the teacher's explanation and queries, how many samples it led to), then gap counts
per skill; at the end, val/test/generic accuracy per round. With ``--html``: one static page with the
images, each diagnosis beside the samples it selected, and which gaps closed (agents/report.py); with a
second run directory the two side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tutorloop.agents.records import DiagnosisLog, RunSummary
from tutorloop.agents.run_dir import DIAGNOSES, RunDir
from tutorloop.agents.tables import pct

DEFAULT_HTML = Path("\0default")  # --html given without a file: RUNDIR/report.html


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUNDIR", help="a run directory written by `tutorloop run`")
    parser.add_argument("other", type=Path, nargs="?", metavar="RUNDIR_B",
                        help="a second run to put beside the first (e.g. teacher vs random at the same budget)")
    parser.add_argument("--html", type=Path, nargs="?", const=DEFAULT_HTML, metavar="FILE",
                        help="write the HTML report (default: RUNDIR/report.html, or RUNDIR/report-vs-B.html "
                             "with two runs); images go to a sibling FILE_files/ folder")
    parser.add_argument("--round", type=int, help="show this round only (default: every round)")
    parser.add_argument("--limit", type=int, default=50, help="diagnoses shown per round (default: 50)")


def run(args: argparse.Namespace) -> int:
    # Piped into a file or a pager, rich would fall back to 80 columns: too narrow for nine columns of text.
    console = Console() if sys.stdout.isatty() else Console(width=180)
    run_dir = RunDir(args.run_dir)
    for path in [args.run_dir, args.other] if args.other else [args.run_dir]:
        if not RunDir(path).exists():
            console.print(f"[red]{path}: not a tutorloop run directory (no run.json)[/red]")
            return 2
    if args.html is not None:
        return write_html(args, console)
    if args.other:
        console.print("[red]a second run directory needs --html (the terminal shows one run)[/red]")
        return 2
    rounds = [n for n in run_dir.rounds() if n > 0]
    for number in [args.round] if args.round is not None else rounds:
        rows = run_dir.read(number, DIAGNOSES)
        console.print(diagnosis_table(number, rows, args.limit))
        console.print(gap_table(number, rows))
    if run_dir.has_summary():
        console.print(accuracy_table(run_dir.read_summary()))
    return 0


def write_html(args: argparse.Namespace, console: Console) -> int:
    from tutorloop.agents.report import build_report

    runs = [args.run_dir, args.other] if args.other else [args.run_dir]
    out = args.html
    if out == DEFAULT_HTML:
        out = args.run_dir / (f"report-vs-{args.other.name}.html" if args.other else "report.html")
    path = build_report(runs, out)
    console.print(f"report: {path} ({path.stat().st_size / 1e3:.0f} kB; images in {path.stem}_files/)")
    return 0


def diagnosis_table(number: int, rows: list[DiagnosisLog], limit: int) -> Table:
    rejected = sum(1 for r in rows if r.diagnosis is None)
    table = Table(title=f"round {number}: {len(rows)} failures diagnosed, {rejected} without a diagnosis",
                  show_lines=True)
    for column in ("sample", "question", "reference", "student", "step", "error", "missing skill",
                   "explanation", "queries", "picked"):
        table.add_column(column, overflow="fold")
    for row in rows[:limit]:
        d = row.diagnosis
        table.add_row(
            row.sample_id, row.question, row.reference, row.prediction,
            "—" if d is None or d.erroneous_step is None else str(d.erroneous_step),
            d.error_type if d else f"[red]{row.error or 'no teacher'}[/red]",
            d.missing_skill if d else "—", d.explanation if d else "—", "\n".join(d.queries) if d else "",
            str(len(row.selected_ids)),
        )
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more not shown (--limit)"
    return table


def gap_table(number: int, rows: list[DiagnosisLog]) -> Table:
    counts = Counter(r.diagnosis.missing_skill if r.diagnosis else "(none)" for r in rows)
    table = Table(title=f"round {number}: failures per missing skill")
    table.add_column("missing skill")
    table.add_column("failures", justify="right")
    for skill, count in counts.most_common():
        table.add_row(skill, str(count))
    return table


def accuracy_table(summary: RunSummary) -> Table:
    table = Table(title=f"accuracy per round ({summary.selector}, stop: {summary.stop_reason})")
    for column in ("round", "selected", "val", "test", "generic"):
        table.add_column(column, justify="right")
    rows = [(0, 0, summary.initial), *((r.round, r.selected, r) for r in summary.rounds)]
    for number, selected, acc in rows:
        table.add_row(str(number), str(selected), pct(acc.val_accuracy), pct(acc.test_accuracy),
                      pct(acc.generic_accuracy))
    return table
