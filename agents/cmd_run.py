"""`tutorloop run`: the adaptation loop on a user's student, validation set and pool index.

Re-running with the same ``--out`` resumes a stopped or killed run from its last checkpoint; the run's
config is stored in ``RUNDIR/run.json``, so ``tutorloop run --out RUNDIR`` alone is enough.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tutorloop.agents.run_dir import RunDir
from tutorloop.agents.selectors import SELECTORS

log = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", type=Path, help="student model folder (HF format) or hub id")
    parser.add_argument("--val", type=Path, help="validation file of the target task (LLaVA JSON/JSONL)")
    parser.add_argument("--test", type=Path, help="held-out test file of the target task: measured, never diagnosed")
    parser.add_argument("--generic", type=Path, help="a file of skills the student already has, to measure forgetting")
    parser.add_argument("--image-root", type=Path, help="images of val/test/generic (default: the val file's folder)")
    parser.add_argument("--store", type=Path, help="folder of the embedded Qdrant index built by `tutorloop index`")
    parser.add_argument("--qdrant-url", help="a Qdrant server instead of --store (API key from QDRANT_API_KEY)")
    parser.add_argument("--collection", help="collection name of the pool (default: pool)")
    parser.add_argument("--budget", type=int, help="samples to select over the whole run (split evenly over rounds)")
    parser.add_argument("--rounds", type=int, help="maximum number of rounds (default: 3)")
    parser.add_argument("--teacher", help="OpenAI-compatible base URL of the teacher (default: $OPENAI_BASE_URL "
                        "or http://127.0.0.1:8000/v1); 'none' for no teacher")
    parser.add_argument("--teacher-model", help="model name the teacher endpoint serves (default: teacher)")
    parser.add_argument("--teacher-dialect", choices=["auto", "json_schema", "json_object"],
                        help="structured-output dialect: json_schema (vLLM/OpenAI), json_object (llama.cpp), auto")
    parser.add_argument("--teacher-concurrency", type=int, help="teacher requests in flight (default: 16)")
    parser.add_argument("--selector", choices=list(SELECTORS),
                        help="; ".join(f"{s.name}: {s.help}" for s in SELECTORS.values()))
    parser.add_argument("--target-accuracy", type=float, help="stop once val accuracy reaches this (0..1)")
    parser.add_argument("--known-share", type=float,
                        help="known samples replayed per budget sample: pool samples the untouched student already "
                             "knows, against forgetting (any selector; default 1, on top of the budget; 0 switches "
                             "it off)")
    parser.add_argument("--known-within-budget", dest="known_on_top", action="store_false", default=None,
                        help="take known replay out of the budget instead of adding it on top")
    parser.add_argument("--anchor-weight", type=float,
                        help="weight of the KL from the untouched student to the trained one on a pool draw outside "
                             "what the round teaches, against forgetting (default 0: off)")
    parser.add_argument("--max-forgetting", type=float,
                        help="accuracy points the student may lose on --generic (else on a probe of pool samples it "
                             "answers right) since it was given; each round keeps the share of its trained change with "
                             "the best val accuracy within this bound (default 1)")
    parser.add_argument("--probe-size", type=int,
                        help="without --generic: pool samples the untouched student answers right, never trained "
                             "on, on which forgetting is measured (default 200)")
    parser.add_argument("--export", choices=["llava", "sharegpt", "messages"],
                        help="form of each round's selected.jsonl (default: the pool's own form, sample by sample)")
    parser.add_argument("--no-perturbation", action="store_true", help="ablation: re-rank without the perturbation score")
    parser.add_argument("--no-clusters", action="store_true", help="ablation: re-rank without cluster quotas")
    from tutorloop.training.scorers import RULES, SCORERS

    parser.add_argument("--scorer", choices=[*SCORERS, *RULES],
                        help="student-side score mixed with relevance (default: none, relevance only); "
                             + "; ".join(f"{name}: {s.help}" for name, s in SCORERS.items())
                             + "; " + "; ".join(f"{name}: {text}" for name, text in RULES.items()))
    parser.add_argument("--epochs", type=int, help="the most LoRA epochs a round trains (default 20: it stops when "
                        "the val split's answer loss stops falling); with --fixed-epochs, exactly this many")
    parser.add_argument("--fixed-epochs", action="store_true",
                        help="train every round for exactly --epochs (default 3), without the held-out stop")
    parser.add_argument("--seed", type=int, help="seed of selection and training (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="run directory; an existing one is resumed")
    parser.add_argument("--config", type=Path, help="YAML/TOML/JSON config; flags override it")
    parser.add_argument("--approve", action="store_true", default=None,
                        help="stop after each round's plan, with a preview of what each gap would buy, until "
                             "`tutorloop approve RUNDIR` records a decision")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also TUTORLOOP_DEBUG=1)")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    teacher_url = None if args.teacher in (None, "none") else args.teacher
    return {
        "student": args.student, "val": args.val, "test": args.test, "generic": args.generic,
        "image_root": args.image_root, "store": args.store, "qdrant_url": args.qdrant_url,
        "collection": args.collection, "budget": args.budget, "rounds": args.rounds,
        "selector": args.selector or ("failures" if args.teacher == "none" else None),
        "seed": args.seed, "out": args.out, "target_accuracy": args.target_accuracy, "known_share": args.known_share, "export": args.export,
        "known_on_top": args.known_on_top,
        "max_forgetting": args.max_forgetting, "probe_size": args.probe_size, "approve": args.approve,
        "teacher": {"base_url": teacher_url, "model": args.teacher_model, "dialect": args.teacher_dialect,
                    "concurrency": args.teacher_concurrency},
        "rerank": {"use_perturbation": False if args.no_perturbation else None,
                   "use_clusters": False if args.no_clusters else None, "scorer": args.scorer},
        "lora": {"early_stop": False if args.fixed_epochs else None,
                 "epochs": args.epochs or (3 if args.fixed_epochs else None), "anchor_weight": args.anchor_weight},
    }


def run(args: argparse.Namespace) -> int:
    from tutorloop.agents.preflight import (
        PreflightError,
        check_paths,
        check_resume,
        check_teacher,
        config_error,
    )

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_dir = RunDir(args.out)
    given = overrides_from(args)
    try:
        from tutorloop.agents.config import build_config, merge

        if run_dir.exists():
            info = run_dir.read_info()
            check_resume(info.config, given, args.out)
            config = build_config(None, merge(info.config, given))
            summary = run_dir.read_summary() if run_dir.has_summary() else None
            if summary is not None and summary.stop_reason:
                print(f"run {info.run_id} in {args.out} has finished ({summary.stop_reason}); its results:",
                      file=sys.stderr)
            else:
                round_number, stage = run_dir.position()
                print(f"resuming run {info.run_id} in {args.out} at round {round_number}, {stage}", file=sys.stderr)
        else:
            config = build_config(args.config, given)
        needs_teacher = SELECTORS[config.selector].needs_teacher
        if needs_teacher and args.teacher == "none":
            raise PreflightError(f"--selector {config.selector} needs a teacher endpoint; "
                                 "use --selector failures with --teacher none")
        check_paths(config)
        if needs_teacher:
            check_teacher(config.teacher.base_url, config.teacher.api_key.get_secret_value() or None)
    except ValidationError as error:
        return _fail(config_error(error), args)
    except (PreflightError, ValueError, OSError) as error:
        return _fail(str(error), args)
    return _run(config, run_dir, args)


def _run(config: Any, run_dir: RunDir, args: argparse.Namespace) -> int:
    from rich.console import Console

    from tutorloop.agents import api
    from tutorloop.agents.selectors.teacher import TeacherFailed
    from tutorloop.agents.tables import summary_table

    try:
        with _terminate_as_interrupt():
            summary = api.run(config)
    except (KeyboardInterrupt, Terminated) as stop:
        round_number, stage = run_dir.position()
        print(f"tutorloop run: interrupted in round {round_number}, {stage}; resume with: tutorloop run --out "
              f"{config.out}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except TeacherFailed as error:
        return _fail(str(error), args, code=3)
    except (LookupError, ValueError) as error:  # an index that is missing, empty or of an older format
        return _fail(str(error), args)
    console = Console()
    waiting = run_dir.waiting_for_approval()
    if waiting is not None:
        console.print(f"round {waiting} waits for approval: tutorloop review {config.out} --html; then "
                      f"tutorloop approve {config.out} [--drop GAP] [--weight GAP=W] [--note TEXT]")
        return 0
    console.print(summary_table(summary))
    for row in summary.rounds:
        if row.short:
            console.print(f"round {row.round}: {row.short} samples of its budget were left unspent: the pool has no "
                          "more that were not trained on (a smaller --budget, or a larger pool)")
    console.print(f"stopped: {summary.stop_reason}. Diagnoses: tutorloop review {config.out}")
    return 0


def _fail(message: str, args: argparse.Namespace, code: int = 2) -> int:
    """One line, no traceback (``--debug`` or TUTORLOOP_DEBUG=1 shows it)."""
    if args.debug or os.environ.get("TUTORLOOP_DEBUG") == "1":
        raise
    print(f"tutorloop run: {message}", file=sys.stderr)
    return code


class Terminated(BaseException):
    """SIGTERM, raised where the run is, so it stops like Ctrl-C (every artefact is written atomically)."""


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def stop(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    # A process started in the background of a script inherits SIGINT ignored; `kill -INT` from a supervisor
    # must stop a run as Ctrl-C does, so the default handler (KeyboardInterrupt) is put back
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
