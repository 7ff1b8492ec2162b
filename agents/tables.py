"""Terminal tables a person reads at the end of a run or a demo (rich)."""

from __future__ import annotations

from rich.table import Table

from tutorloop.agents.records import RunSummary
from tutorloop.agents.run_dir import RunDir

SPLITS = ("val", "test", "generic")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def points(value: float | None) -> str:
    return "—" if value is None else f"{-value:+.1f}"


def summary_table(summary: RunSummary) -> Table:
    """A row per round: accuracy per split, forgetting (points lost on the generic split or the probe since the
    student was given), the operating point kept (the share of the round's trained change) and seconds."""
    probe = summary.initial.generic_accuracy is None and summary.initial.probe_accuracy is not None
    splits = (*SPLITS[:2], "probe" if probe else "generic")
    table = Table(title=f"tutorloop run — {summary.selector}, budget {summary.budget}")
    for column in ("round", "selected", "val acc", "test acc", f"{splits[2]} acc", "forgetting", "kept", "seconds"):
        table.add_column(column, justify="right")
    table.add_row("0", "0", *(pct(getattr(summary.initial, f"{s}_accuracy")) for s in splits), "", "", "")
    for row in summary.rounds:
        kept = "start" if row.kept_start else ("—" if row.alpha is None else f"{row.alpha:g}")
        table.add_row(str(row.round), str(row.selected), *(pct(getattr(row, f"{s}_accuracy")) for s in splits),
                      points(row.forgetting), kept, " ".join(f"{k} {v:.0f}" for k, v in row.seconds.items()))
    return table


def before_after_table(run_dir: RunDir) -> Table:
    """Accuracy per skill (source) of the test and generic splits: the student as given vs after the run."""
    history = run_dir.metrics_history()
    before, after = history[0], history[-1]
    table = Table(title=f"accuracy per skill: before → after {len(history) - 1} round(s)")
    for column in ("split", "skill", "before", "after", "change"):
        table.add_column(column, justify="right" if column in {"before", "after", "change"} else "left")
    for split in ("test", "generic"):
        for skill, entry in sorted(before.by_source(split).items()):
            old, new = entry["accuracy"], after.by_source(split)[skill]["accuracy"]
            table.add_row(split, skill, pct(old), pct(new), f"{100 * (new - old):+.1f}")
    return table
