"""`tutorloop eval`: evaluate a student (optionally with a LoRA adapter) on a LLaVA-format data file.

Prints a table per source, then, as the last line of stdout, one JSON object
``{"accuracy": a, "n": n, "by_source": {...}}`` that scripts can parse. ``--out`` writes one
``EvalRecord`` per sample as JSONL (question, reference, prediction, reasoning steps, correct).
Exit codes: 0 done, 1 the evaluation failed, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tutorloop.training.configs import DEFAULT_BATCH_SIZE, DEFAULT_MATCHER, DEFAULT_MAX_NEW_TOKENS
    from tutorloop.training.matching import MATCHERS

    parser.add_argument("--student", required=True, metavar="DIR",
                        help="student model: a folder in Hugging Face format (any image-text-to-text model), or a "
                        "hub id already in the local cache (nothing is downloaded)")
    parser.add_argument("--adapter", type=Path, metavar="DIR", help="a PEFT (LoRA) adapter folder to put on the student")
    parser.add_argument("--data", type=Path, required=True, metavar="FILE",
                        help="validation/test file in the LLaVA conversation format (JSON array or JSONL); "
                        "the last gpt turn of each record is the reference answer")
    parser.add_argument("--image-root", type=Path, metavar="DIR",
                        help="folder the records' image paths are relative to (default: the data file's folder)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write one evaluation record per sample here (JSONL)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"samples per generation batch (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--matcher", default=DEFAULT_MATCHER, choices=sorted(MATCHERS),
                        help="answer matcher: vqa normalises case, punctuation, articles, number words, yes/no and "
                        "choice letters; exact compares stripped strings (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help="generation length limit (default: %(default)s)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    errors = Console(stderr=True, soft_wrap=True)
    problem = _check_args(args)
    if problem:
        errors.print(f"[red]error:[/red] {problem}")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    from tutorloop.retrieval.files import write_jsonl
    from tutorloop.retrieval.ingest import default_image_root, load_samples
    from tutorloop.training.evaluate import evaluate
    from tutorloop.training.student import load_student

    image_root = args.image_root or default_image_root(args.data)
    try:
        samples = load_samples(args.data, image_root)
    except (ValueError, OSError) as error:
        errors.print(f"[red]error:[/red] {error}")
        return 2
    try:
        student = load_student(args.student, adapter=args.adapter, device=args.device)
        result = evaluate(student, samples, image_root, matcher=args.matcher, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    except (ValueError, OSError, RuntimeError) as error:
        errors.print(f"[red]error:[/red] {error}")
        return 1
    if args.out:
        write_jsonl(args.out, result.records)
    Console(file=sys.stdout).print(summary_table(result.summary, args))
    print(json.dumps(result.summary), flush=True)  # the last stdout line: the machine-readable summary
    return 0


def _check_args(args: argparse.Namespace) -> str | None:
    if not args.data.is_file():
        return f"data file not found: {args.data}"
    if args.image_root is not None and not args.image_root.is_dir():
        return f"image root is not a folder: {args.image_root}"
    if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
        return f"no PEFT adapter (adapter_config.json) in {args.adapter}"
    if Path(args.student).exists() and not (Path(args.student) / "config.json").is_file():
        return f"not a Hugging Face model folder (no config.json): {args.student}"
    if args.batch_size < 1 or args.max_new_tokens < 1:
        return "--batch-size and --max-new-tokens must be positive"
    return None


def summary_table(summary: dict, args: argparse.Namespace):
    from rich.table import Table

    adapter = f" + {args.adapter}" if args.adapter else ""
    table = Table(title=f"tutorloop eval: {args.student}{adapter} on {args.data}")
    for column in ("source", "n", "correct", "accuracy"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for source, entry in summary["by_source"].items():
        table.add_row(source, str(entry["n"]), str(entry["correct"]), f"{100 * entry['accuracy']:.1f}%")
    correct = sum(e["correct"] for e in summary["by_source"].values())
    table.add_row("[bold]all[/bold]", str(summary["n"]), str(correct), f"[bold]{100 * summary['accuracy']:.1f}%[/bold]")
    return table
