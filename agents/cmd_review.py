"""`tutorloop review RUNDIR [--round N]`: the teacher's diagnoses, as a person reads them.

Per round: one row per failure (question, reference, the student's answer, the erroneous step, the
missing skill, the teacher's explanation and queries, how many samples it led to), then gap counts per skill; at the
end, val/test/generic accuracy per round.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agents.records import DiagnosisLog, RunSummary
from agents.run_dir import DIAGNOSES, RunDir
from agents.tables import pct


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUNDIR", help="a run directory written by `tutorloop run`")
    parser.add_argument("--round", type=int, help="show this round only (default: every round)")
    parser.add_argument("--limit", type=int, default=50, help="diagnoses shown per round (default: 50)")


def run(args: argparse.Namespace) -> int:
    # Piped into a file or a pager, rich would fall back to 80 columns: too narrow for nine columns of text.
    console = Console() if sys.stdout.isatty() else Console(width=180)
    run_dir = RunDir(args.run_dir)
    if not run_dir.exists():
        console.print(f"[red]{args.run_dir}: not a tutorloop run directory (no run.json)[/red]")
        return 2
    rounds = [n for n in run_dir.rounds() if n > 0]
    for number in [args.round] if args.round is not None else rounds:
        rows = run_dir.read(number, DIAGNOSES)
        console.print(diagnosis_table(number, rows, args.limit))
        console.print(gap_table(number, rows))
    if run_dir.has_summary():
        console.print(accuracy_table(run_dir.read_summary()))
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
