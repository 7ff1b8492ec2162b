"""`tutorloop approve`: record a person's decision on the plan a round waits with, and resume the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tutorloop.agents.run_dir import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUNDIR", help="a run started with --approve")
    parser.add_argument("--round", type=int, help="the round to decide (default: the one waiting)")
    parser.add_argument("--drop", action="append", default=[], metavar="GAP",
                        help="leave this gap out of the round (its budget goes to the others); repeatable")
    parser.add_argument("--weight", action="append", default=[], metavar="GAP=W",
                        help="scale this gap's share of the budget by W (the round's total stays); repeatable")
    parser.add_argument("--add-query", action="append", default=[], metavar='GAP="TEXT"',
                        help="one more query for this gap's retrieval; repeatable")
    parser.add_argument("--note", default="", help="why, for whoever reads the run later")
    parser.add_argument("--no-resume", action="store_true", help="record the decision only; resume later with "
                        "tutorloop run --out RUNDIR")


def _plan(run_dir: RunDir, number: int):
    """The round's plan, as the run left it or as a person edited ``gaps.json`` by hand (checked here)."""
    from pydantic import ValidationError

    from tutorloop.agents.run_dir import PLAN

    try:
        return run_dir.read(number, PLAN)
    except ValidationError as error:
        where = run_dir.path(number, PLAN)
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "the file"
        raise ValueError(f"{where}: {field}: {first['msg']} ({error.error_count()} problem(s)); fix the file or "
                         "restore the plan the run wrote") from None
    except ValueError as error:  # not JSON at all
        raise ValueError(f"{run_dir.path(number, PLAN)}: not a plan ({error})") from None


def _queries(pairs: list[str]) -> dict[str, list[str]]:
    queries: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not text.strip():
            raise ValueError(f'--add-query {pair}: give GAP="TEXT", e.g. --add-query counting="how many circles?"')
        queries.setdefault(name, []).append(text.strip())
    return queries


def _weights(pairs: list[str]) -> dict[str, float]:
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--weight {pair}: give GAP=W with a number W, e.g. --weight counting=2") from None
        if weights[name] < 0:
            raise ValueError(f"--weight {pair}: a weight cannot be negative")
    return weights


def run(args: argparse.Namespace) -> int:
    from tutorloop.agents.approval import ApprovalError, decide
    from tutorloop.agents.run_dir import APPROVAL, PLAN

    run_dir = RunDir(args.run_dir)
    try:
        if not run_dir.exists():
            raise ApprovalError(f"{args.run_dir}: not a run directory (no run.json)")
        planned = [n for n in run_dir.rounds() if n > 0 and run_dir.has(n, PLAN)]
        number = args.round or run_dir.waiting_for_approval() or (planned[-1] if planned else None)
        if number is None or not run_dir.has(number, PLAN):
            raise ApprovalError(f"{args.run_dir}: no round waits for approval (start the run with --approve)")
        if run_dir.has(number, APPROVAL):
            raise ApprovalError(f"round {number} was decided already ({run_dir.read(number, APPROVAL).status})")
        edited, approval = decide(number, _plan(run_dir, number), drop=args.drop, weights=_weights(args.weight),
                                  note=args.note, queries=_queries(args.add_query))
    except ValueError as error:
        print(f"tutorloop approve: {error}", file=sys.stderr)
        return 2
    run_dir.write(number, PLAN, edited)
    run_dir.write(number, APPROVAL, approval)  # last: the select node goes on once it exists
    print(f"round {number} {approval.status} by {approval.by}: "
          + ", ".join(f"{gap} {approval.budgets_before.get(gap, 0)} → {approval.budgets_after.get(gap, 0)}"
                      for gap in approval.budgets_before), file=sys.stderr)
    if args.no_resume:
        return 0
    from tutorloop.agents.cli import main

    return main(["run", "--out", str(args.run_dir)])
