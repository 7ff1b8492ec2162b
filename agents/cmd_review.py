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

from agents.run_dir import read_json, read_jsonl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUNDIR", help="a run directory written by `tutorloop run`")
    parser.add_argument("--round", type=int, help="show this round only (default: every round)")
    parser.add_argument("--limit", type=int, default=50, help="diagnoses shown per round (default: 50)")


def run(args: argparse.Namespace) -> int:
    # Piped into a file or a pager, rich would fall back to 80 columns: too narrow for nine columns of text.
    console = Console() if sys.stdout.isatty() else Console(width=180)
    if not (args.run_dir / "run.json").exists():
        console.print(f"[red]{args.run_dir}: not a tutorloop run directory (no run.json)[/red]")
        return 2
    rounds = sorted(int(p.name[6:]) for p in args.run_dir.glob("round_[0-9]*") if int(p.name[6:]) > 0)
    for number in [args.round] if args.round is not None else rounds:
        rows = read_jsonl(args.run_dir / f"round_{number:02d}" / "diagnoses.jsonl")
        console.print(diagnosis_table(number, rows, args.limit))
        console.print(gap_table(number, rows))
    summary_path = args.run_dir / "summary.json"
    if summary_path.exists():
        console.print(accuracy_table(read_json(summary_path)))
    return 0


def diagnosis_table(number: int, rows: list[dict], limit: int) -> Table:
    rejected = sum(1 for r in rows if r.get("diagnosis") is None)
    table = Table(title=f"round {number}: {len(rows)} failures diagnosed, {rejected} without a diagnosis",
                  show_lines=True)
    for column in ("sample", "question", "reference", "student", "step", "error", "missing skill",
                   "explanation", "queries", "picked"):
        table.add_column(column, overflow="fold")
    for row in rows[:limit]:
        d = row.get("diagnosis") or {}
        table.add_row(
            row["sample_id"], row["question"], row["reference"], row["prediction"],
            "—" if d.get("erroneous_step") is None else str(d["erroneous_step"]),
            d.get("error_type") or f"[red]{row.get('error') or 'no teacher'}[/red]",
            d.get("missing_skill", "—"), d.get("explanation", "—"), "\n".join(d.get("queries", [])),
            str(len(row.get("selected_ids", []))),
        )
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more not shown (--limit)"
    return table


def gap_table(number: int, rows: list[dict]) -> Table:
    counts = Counter((r.get("diagnosis") or {}).get("missing_skill", "(none)") for r in rows)
    table = Table(title=f"round {number}: failures per missing skill")
    table.add_column("missing skill")
    table.add_column("failures", justify="right")
    for skill, count in counts.most_common():
        table.add_row(skill, str(count))
    return table


def accuracy_table(summary: dict) -> Table:
    table = Table(title=f"accuracy per round ({summary.get('selector')}, stop: {summary.get('stop_reason')})")
    for column in ("round", "selected", "val", "test", "generic"):
        table.add_column(column, justify="right")
    rows = [{"round": 0, "selected": 0, **summary["initial"]}, *summary["rounds"]]
    for row in rows:
        table.add_row(str(row["round"]), str(row["selected"]),
                      *("—" if row.get(k) is None else f"{100 * row[k]:.1f}%"
                        for k in ("val_accuracy", "test_accuracy", "generic_accuracy")))
    return table
