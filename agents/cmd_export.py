"""`tutorloop export RUNDIR --out DIR [--form llava|sharegpt|messages] [--rounds all|N]`: a run's selection
as a folder an outside trainer (LLaVA, LLaMA-Factory, TRL) reads as is — ``DIR/selected.jsonl`` with every
image materialised under ``DIR/images/`` (table images decoded out of the Parquet / Arrow files), paths
relative to DIR. The work is agents/export.py's `export_run`; this module is flags -> call -> table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tutorloop.agents.export import ExportError, ExportReport, export_run
from tutorloop.retrieval.formats import FORMS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUNDIR", help="a run directory written by `tutorloop run`")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the export folder: new, empty, or an earlier export (re-running overwrites it)")
    parser.add_argument("--form", choices=FORMS,
                        help="write every record in this form (default: each in the form it was selected in)")
    parser.add_argument("--rounds", default="all", metavar="all|N",
                        help="'all' rounds (default) or N: rounds 1..N, what the student had trained on after N")
    parser.add_argument("--image-root", type=Path, metavar="DIR",
                        help="where the pool's images are (default: the pool_image_root run.json recorded)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=120)
    try:
        report = export_run(args.run_dir, args.out, form=args.form, rounds=args.rounds, image_root=args.image_root,
                            progress=not args.no_progress and sys.stderr.isatty())
    except ExportError as error:
        console.print(f"[red]export: {error}[/red]", soft_wrap=True)
        return 2
    console.print(summary_table(report, args.out))
    return 0


def summary_table(report: ExportReport, out: Path) -> Table:
    """One row per round, then the export: samples, image files in images/, how many written, their bytes."""
    table = Table(title=f"exported to {out} ({report.form or 'each sample in the form it was selected in'})")
    for column in ("round", "samples", "image refs", "image files", "written", "bytes"):
        table.add_column(column, justify="right")
    for count in report.rounds:
        table.add_row(str(count.round), str(count.samples), str(count.images), "", "", "")
    table.add_section()
    table.add_row("all", str(report.samples), str(sum(c.images for c in report.rounds)), str(report.images),
                  str(report.written), _size(report.bytes))
    table.caption = (f"{report.images - report.written} image files were already there, equal; "
                     f"{report.removed} stale removed")
    return table


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
