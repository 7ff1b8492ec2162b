"""LoRA training over several processes (GPUs, or CPU processes on gloo) through accelerate.

One command trains a round's adapter on N processes from a samples file (a round's ``selected.jsonl`` is
one), with the same settings and the same result as ``train_lora`` in one process::

    accelerate launch --num_processes 4 -m tutorloop.training.distributed \\
        --student STUDENT_DIR --data SELECTED_JSONL --out ADAPTER_DIR \\
        [--image-root DIR] [--adapter PREVIOUS_ADAPTER] [--replay FILE] [--config lora.yaml] [--set lr=1e-4]

Design: every process loads the student, builds the same global batches from the same seed and takes its
share of each (rows ``rank, rank + N, ...``), so ``batch_size`` / ``max_tokens_per_batch`` are global
settings and the result does not depend on N. The loss of a share is normalised by the answer tokens of
the whole global batch (one all-reduce of a count), which makes the gradient DDP averages equal to the
single-process gradient of that batch. A process whose share is empty (a last batch with fewer rows than
processes) trains on a copy of one row with weight 0, so it still joins every gradient all-reduce. The
main process writes the adapter. FSDP: the model goes through ``accelerator.prepare`` and the optimizer is
built on the prepared parameters, so ``accelerate launch --use_fsdp --fsdp_use_orig_params true ...`` (orig
params: LoRA mixes frozen and trainable weights in one layer) shards a student too large to replicate; it is
not tested here (no multi-GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch


def share_of(index: list[int], rank: int, size: int) -> tuple[list[int], int]:
    """Process ``rank``'s rows of a global batch and their weight (0: an empty share padded with one row)."""
    rows = index[rank::size]
    return (rows, 1) if rows else (index[:1], 0)


def share_loss(mean: torch.Tensor, count: torch.Tensor, everywhere: torch.Tensor, size: int) -> torch.Tensor:
    """The loss of one share whose gradient, averaged over ``size`` processes (what DDP does), is the gradient
    of the mean NLL over the global batch: ``mean`` is the share's mean over its ``count`` answer tokens and
    ``everywhere`` the global batch's answer tokens. In one process the factor is ``count / count`` = 1.0."""
    return mean * (count * size / everywhere.clamp(min=1))


class ProcessGroup:
    """The processes training together: one (no accelerator, or an accelerator of one process) or N."""

    def __init__(self, accelerator: Any = None) -> None:
        self.accelerator = accelerator if accelerator is not None and accelerator.num_processes > 1 else None
        self._saver = accelerator

    @property
    def size(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def is_main(self) -> bool:
        return self._saver is None or self._saver.is_main_process

    def share(self, index: list[int]) -> tuple[list[int], int]:
        """This process's rows of a global batch and their weight (0: an empty share padded with one row)."""
        return share_of(index, self.rank, self.size)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value.clone(), reduction="sum") if self.accelerator else value

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare_model(model) if self.accelerator else model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> Any:
        return self.accelerator.prepare_optimizer(optimizer) if self.accelerator else optimizer

    def no_sync(self, model: torch.nn.Module, *, enabled: bool):
        """Skip the gradient all-reduce on the micro-batches of an accumulation window but the last."""
        return self.accelerator.no_sync(model) if self.accelerator and enabled else nullcontext()

    def clip(self, params: list[torch.nn.Parameter], max_norm: float) -> None:
        if self.accelerator:
            self.accelerator.clip_grad_norm_(params, max_norm)  # FSDP computes the norm over shards
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()


def make_accelerator() -> Any:
    """An ``Accelerator`` for the launched processes: CUDA when there is one (NCCL), else CPU processes on gloo.
    Precision is the loop's own (``TrainConfig.precision``: autocast), not accelerate's."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tutorloop.training.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, help="the student model folder")
    parser.add_argument("--data", required=True, type=Path, help="samples to train on (any pool form; selected.jsonl)")
    parser.add_argument("--out", required=True, type=Path, help="adapter folder to write")
    parser.add_argument("--image-root", type=Path, help="default: the data file's folder")
    parser.add_argument("--adapter", type=Path, help="continue this adapter (a previous round's)")
    parser.add_argument("--replay", type=Path, help="samples of earlier rounds to mix in (replay_ratio)")
    parser.add_argument("--config", type=Path, help="LoraTrainConfig as YAML or JSON")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one LoraTrainConfig field (value parsed as JSON, else a string)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads per process")
    return parser.parse_args(argv)


def load_config(path: Path | None, overrides: list[str]) -> Any:
    import yaml

    from tutorloop.training.configs import LoraTrainConfig

    values: dict = yaml.safe_load(path.read_text()) or {} if path else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return LoraTrainConfig.model_validate(values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tutorloop.retrieval.ingest import default_image_root, load_samples
    from tutorloop.training.lora import train_lora
    from tutorloop.training.student import load_student

    config = load_config(args.config, args.set)
    accelerator = make_accelerator()
    root = args.image_root or default_image_root(args.data)
    samples = load_samples(args.data, root)
    replay = load_samples(args.replay, args.image_root or default_image_root(args.replay)) if args.replay else []
    student = load_student(args.student, adapter=args.adapter, device=accelerator.device,
                           is_trainable=args.adapter is not None)
    report = train_lora(student, samples, root, config, args.out, replay=replay,
                        progress=accelerator.is_main_process, accelerator=accelerator)
    if accelerator.is_main_process:
        print(json.dumps({"out_dir": report.out_dir, "steps": report.steps, "last_loss": report.last_loss,
                          "processes": accelerator.num_processes, "samples_per_s": report.samples_per_s}))
    accelerator.end_training()
    return 0


def launch_command(n_processes: int, args: list[str]) -> list[str]:
    """The ``accelerate launch`` command line for ``n_processes`` (what the README documents)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            *(["--multi_gpu"] if n_processes > 1 else []), "-m", "tutorloop.training.distributed", *args]


def launch_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


if __name__ == "__main__":
    sys.exit(main())
