"""The ``tutorloop`` command: one sub-command per stage, each defined in its own ``agents/cmd_*.py``.

Every command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
they are imported lazily so ``tutorloop --help`` does not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

COMMANDS = {
    "index": "tutorloop.agents.cmd_index",
    "skills": "tutorloop.agents.cmd_skills",
    "eval": "tutorloop.agents.cmd_eval",
    "run": "tutorloop.agents.cmd_run",
    "approve": "tutorloop.agents.cmd_approve",
    "review": "tutorloop.agents.cmd_review",
    "export": "tutorloop.agents.cmd_export",
    "demo": "tutorloop.agents.cmd_demo",
}
HELPS = {
    "index": "ingest a pool (LLaVA / sharegpt / messages JSON or JSONL, Parquet, a datasets folder), embed it "
             "and build its Qdrant index with clusters (--ray: on a Ray cluster)",
    "skills": "name the pool's skills (fine clusters, one teacher call each) into skills.json beside the index; "
              "teacher runs then choose diagnoses from it",
    "eval": "evaluate a student (optionally with a LoRA adapter) on a LLaVA-format data file",
    "run": "run the adaptation loop: evaluate, plan the gaps (teacher diagnoses), select (retrieve + re-rank), "
           "LoRA-train, repeat",
    "approve": "record a person's decision on the plan a round waits with (--approve runs), with edits "
               "(--drop GAP, --weight GAP=W), and resume the run",
    "review": "the teacher's diagnoses and accuracy per round of a run (--html: a report with the images, "
              "side by side for two runs)",
    "export": "write a run's selected samples with every image as a file (table images decoded) into one "
              "folder an outside trainer reads as is (LLaVA, LLaMA-Factory, TRL)",
    "demo": "build the offline demo world, student and index, then run the loop on it",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tutorloop",
        description="Adapt a vision-language model to a new task with a fraction of the data.",
    )
    parser.add_argument("--version", action="version", version=f"tutorloop {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        sub = subparsers.add_parser(name, help=HELPS[name], description=HELPS[name])
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def _version() -> str:
    try:
        return version("tutorloop")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
