"""Train the student: LoRA rounds for the loop (``train_lora``) and full fine-tuning for pre-training a
tiny model from scratch (``train_full``). Both share one plain torch loop (``run_training``).

LoRA goes on the language model's attention/MLP projections only, chosen by a regex over module names,
because a bare list such as ``["q_proj", "v_proj"]`` would also wrap the vision tower. The projector
(``multi_modal_projector`` in LLaVA, ``connector`` in Idefics3, ...) can be trained fully through
``modules_to_save``: a small student cannot learn a new visual feature with the language side alone.
Loss is on the answer tokens only (``training.student.build_inputs``).

Length of training: a fixed number of ``epochs``, or (``early_stop``) epochs until the answer loss on
held-out samples stops falling — the loop holds out the target's val split, so a round trains as long as
its own data keeps helping the target, whatever the round's size. The start is a candidate too: the best
epoch's weights are kept, and when no epoch lowers the held-out loss the round keeps the weights it started
from (``TrainReport.kept_start``), so a round never leaves the student worse on its own held-out split.

Operating points: ``train_lora``'s ``finish`` receives the trainable weights as they were at the start and may
move the trained ones anywhere between (``blend``: the trained delta scaled by alpha) before they are saved.

Determinism: one seed drives the LoRA init, dropout and the shuffling (its own ``torch.Generator``), and
deterministic kernels are requested while training, so the same call on CPU gives the same adapter.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from tutorloop.retrieval.files import write_json
from tutorloop.retrieval.records import Sample
from tutorloop.training.anatomy import PROJECTOR_NAMES, anatomy
from tutorloop.training.configs import LoraTrainConfig, TrainConfig
from tutorloop.training.distributed import ProcessGroup, share_loss
from tutorloop.training.student import (
    IGNORE_INDEX,
    Student,
    answer_nll,
    answer_span_logits,
    build_inputs,
    items_from_samples,
    quiet_peft,
    untouched,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The fallback target for a model that does not name its language model (get_decoder): projections of
# LLaVA-style (language_model), Idefics3/SmolVLM (text_model) and Qwen2-VL (model.language_model /
# model.layers) models; never the vision tower or the projector. Normally the target is resolved from the
# model (resolve_target).
DEFAULT_TARGET = (
    r"^(?!.*(vision|visual|image_encoder|multi_modal_projector|connector)).*"
    r"(language_model|text_model|model\.layers).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
)


class TrainReport(BaseModel):
    out_dir: str
    mode: str  # "lora" or "full"
    n_selected: int
    n_replay: int
    n_train: int
    steps: int
    epochs_run: float
    losses: list[float]
    first_loss: float | None
    last_loss: float | None
    seconds: float
    samples_per_s: float
    trainable_params: int
    total_params: int
    continued_adapter: bool = False
    projector: str | None = None
    held_out_losses: list[float] = Field(default_factory=list, description="before training, then after each epoch")
    best_epoch: int | None = Field(None, description="the epoch whose weights were kept (early_stop; 0: the start)")
    kept_start: bool = Field(False, description="no epoch lowered the held-out loss: the start's weights were kept")
    anchor_kl: list[float] = Field(default_factory=list, description="the anchor term per batch, before its weight")
    anchor_ids: list[str] = Field(default_factory=list)
    config: dict
    selected_ids: list[str]
    replay_ids: list[str]


# --- data ------------------------------------------------------------------------------------------


def mix_replay(samples: Sequence[Sample], replay: Iterable[Sample], ratio: float, seed: int) -> list[Sample]:
    """Up to ``round(ratio * len(samples))`` replayed samples (a seeded draw, none already selected)."""
    chosen = {s.id for s in samples}
    pool = {s.id: s for s in replay if s.id not in chosen}  # dedupe: a sample may have been replayed before
    n = min(len(pool), round(ratio * len(samples)))
    ids = sorted(pool)
    return [pool[i] for i in sorted(random.Random(seed).sample(ids, n))]


def batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterable[tuple[int, int, list[int]]]:
    """(epoch, batch number in the epoch, indices); each epoch a fresh permutation from its own generator."""
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for number, start in enumerate(range(0, n, batch_size)):
            yield epoch, number, order[start : start + batch_size]


def cut_by_budget(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Greedy cut of ``order`` (sorted by length) into batches whose rows x longest length stay <= ``budget``."""
    cut: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        if current and max(longest, lengths[i]) * (len(current) + 1) > budget:
            cut.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        cut.append(current)
    return cut


def token_budget_batches(lengths: Sequence[int], budget: int, epochs: int, seed: int
                         ) -> Iterator[tuple[int, int, list[int]]]:
    """(epoch, batch number in the epoch, indices) with every batch's padded tokens <= ``budget``.

    Each epoch: a fresh permutation, stably sorted by length (so equal lengths come in a new random order),
    cut greedily into the largest batches the budget allows, visited in a random order (an epoch does not run
    from the shortest samples to the longest). The lengths are the same every epoch, so is the number of
    batches: the schedule's step count is exact.
    """
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = sorted(torch.randperm(len(lengths), generator=generator).tolist(), key=lambda i: lengths[i])
        cut = cut_by_budget(order, lengths, budget)
        for number, position in enumerate(torch.randperm(len(cut), generator=generator).tolist()):
            yield epoch, number, cut[position]


def sample_lengths(student: Student, samples: Sequence[Sample], image_root: Path | None) -> list[int]:
    """Each sample's token count as the model sees it (prompt with expanded image tokens + answer + EOS),
    measured by building its inputs alone: exact for any processor, at the cost of one pass over the data."""
    return [int(build_inputs(student, items_from_samples([s], image_root, with_answer=True))["input_ids"].shape[1])
            for s in samples]


def plan_batches(student: Student, samples: Sequence[Sample], image_root: Path | None, config: TrainConfig
                 ) -> tuple[Iterable[tuple[int, int, list[int]]], int]:
    """The (global) batches of the whole run and how many there are per epoch: a fixed ``batch_size``, or
    ``max_tokens_per_batch`` when set (a sample longer than the budget is refused, naming it)."""
    n = len(samples)
    if config.max_tokens_per_batch is None:
        return batches(n, config.batch_size, config.epochs, config.seed), math.ceil(n / config.batch_size)
    budget = config.max_tokens_per_batch
    lengths = sample_lengths(student, samples, image_root)
    over = sorted(((length, samples[i].id) for i, length in enumerate(lengths) if length > budget), reverse=True)
    if over:
        raise ValueError(f"max_tokens_per_batch={budget} is below the length of {len(over)} sample(s) (longest: "
                         f"{over[0][1]} with {over[0][0]} tokens); raise it to at least {over[0][0]}")
    per_epoch = len(cut_by_budget(sorted(range(n), key=lambda i: lengths[i]), lengths, budget))
    return token_budget_batches(lengths, budget, config.epochs, config.seed), per_epoch


def prefetched(make: Callable[[T], Any], plans: Iterable[T]) -> Iterator[tuple[T, Any]]:
    """``(plan, make(plan))`` in order; the next batch is built in a worker thread while the caller trains
    on the current one (image decoding, resizing and tokenisation overlap the forward/backward pass)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as pool:
        pending: tuple[T, Future] | None = None
        for plan in plans:
            upcoming = (plan, pool.submit(make, plan))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = upcoming
        if pending is not None:
            yield pending[0], pending[1].result()


# --- the loop --------------------------------------------------------------------------------------


@contextmanager
def deterministic(seed: int):
    """Seed everything and request deterministic kernels for the duration of training."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int | None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total`` (``None``: constant)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if total is None:
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: no autocast, the weights' own dtype)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return torch.bfloat16  # asked for: CUDA and CPU both autocast to bf16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@contextmanager
def checkpointing(model: torch.nn.Module, enabled: bool):
    """Gradient (activation) checkpointing for the duration of training, non-reentrant (PyTorch's
    recommendation; it keeps the RNG state, so dropout masks match). The language model's input embeddings
    are made to require grad, as PEFT needs with a frozen base: only the text embeddings, so the frozen
    vision tower still keeps nothing for backward."""
    if not enabled:
        yield
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        disable = base.activation_checkpointing_disable
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        disable = base.gradient_checkpointing_disable
    hook = base.get_input_embeddings().register_forward_hook(lambda _module, _inputs, out: out.requires_grad_(True))
    try:
        yield
    finally:
        hook.remove()
        disable()


def check_training_memory(student: Student, batch: Any, config: TrainConfig, compute_dtype: torch.dtype | None,
                          processes: int) -> None:
    """Refuse, with the estimate, a run whose first micro-batch (or token budget) will not fit."""
    from tutorloop.training.placement import TRAINING_ADVICE, ensure_fits, estimate_training

    labels = batch["labels"]
    width = int((labels != IGNORE_INDEX).sum(1).max())
    tokens = int(batch["input_ids"].numel())
    if config.max_tokens_per_batch:
        tokens = max(tokens, math.ceil(config.max_tokens_per_batch / processes))
    estimate = estimate_training(
        student.model, tokens=tokens, logit_tokens=labels.shape[0] * (width + 1),
        compute_dtype=compute_dtype or student.dtype, checkpointing=config.gradient_checkpointing,
        lora_dropout=getattr(config, "dropout", 0.0) > 0,
    )
    ensure_fits(estimate, student.device, what=f"training {student.name} ({tokens} tokens per micro-batch)",
                advice=TRAINING_ADVICE, limit_gb=config.memory_limit_gb)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Samples whose answer loss decides when training stops (``TrainConfig.early_stop``); never trained on."""

    samples: Sequence[Sample]
    image_root: Path | None

    def loss(self, student: Student, batch_size: int) -> float:
        from tutorloop.training.scores import ANSWER_STATISTICS, answer_statistics

        stats = answer_statistics(student, self.samples, self.image_root, batch_size=batch_size)
        return float(stats[:, ANSWER_STATISTICS.index("nll")].mean())


class EarlyStop:
    """Tracks the held-out loss epoch by epoch and keeps a copy of the trainable weights of the epoch with the
    lowest one; training ends at the first epoch that gains less than ``min_gain`` (relative) on the best."""

    def __init__(self, held_out: HeldOut, config: TrainConfig, student: Student, params: Sequence[torch.nn.Parameter]):
        self.held_out, self.config, self.student, self.params = held_out, config, student, list(params)
        self.losses = [held_out.loss(student, config.batch_size)]  # the start: what an epoch must beat
        # the start is epoch 0, a candidate like any other: an epoch that cannot beat it is not kept
        self.best_epoch, self.best = 0, [p.detach().clone() for p in self.params]

    def after_epoch(self, epoch: int) -> bool:
        """Measure after ``epoch`` (1-based); True when training should stop."""
        loss = self.held_out.loss(self.student, self.config.batch_size)
        self.student.model.train()
        best = self.losses[self.best_epoch]
        self.losses.append(loss)
        if loss < best:
            self.best_epoch, self.best = epoch, [p.detach().clone() for p in self.params]
        return not loss < best * (1 - self.config.min_gain)  # a gain below min_gain ends training

    @property
    def kept_start(self) -> bool:
        return self.best_epoch == 0

    def restore(self) -> None:
        if self.kept_start:
            log.warning("no epoch lowered the held-out loss (%.4f at the start; %s after): the round keeps the "
                        "weights it started from", self.losses[0], ", ".join(f"{x:.4f}" for x in self.losses[1:]))
        with torch.no_grad():
            for param, value in zip(self.params, self.best, strict=True):
                param.copy_(value)


@dataclasses.dataclass(frozen=True)
class Anchors:
    """Samples on whose answers training keeps the untouched student's next-token distribution
    (``LoraTrainConfig.anchor_weight``); never trained on with their labels. The reference answer only places
    the positions: the target there is the untouched model's whole distribution, so a sample the student gets
    wrong anchors what it believes now, not the reference. Known replay (agents/retention.py) trains on what the
    student is judged to know; anchoring keeps what it does on a broad draw, whatever it knows of it."""

    samples: Sequence[Sample]
    image_root: Path | None

    def rows(self, batch_size: int, seed: int) -> Iterator[list[int]]:
        """Endless batches of indices, a fresh seeded permutation per pass."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(self.samples), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                yield order[start : start + batch_size]


def anchor_kl(student: Student, batch: Any) -> torch.Tensor:
    """KL(untouched || trained) per answer token, averaged over the batch's answer tokens. The untouched student
    is the same model with its adapter switched off (one model in memory, one extra forward without grad)."""
    with torch.no_grad(), untouched(student):
        before, targets = answer_span_logits(student, batch)
    after, _ = answer_span_logits(student, batch)
    answer = targets != IGNORE_INDEX
    return torch.nn.functional.kl_div(torch.log_softmax(after[answer], -1), torch.log_softmax(before[answer], -1),
                                      log_target=True, reduction="batchmean")


def run_training(
    student: Student, samples: Sequence[Sample], image_root: Path | None, config: TrainConfig, *,
    progress: bool = True, desc: str = "train", accelerator: Any = None, held_out: HeldOut | None = None,
    anchors: Anchors | None = None,
) -> dict:
    """The one training loop: AdamW over the trainable parameters, linear warm-up and decay, loss on answers
    (the LM head runs on the answer span only), the next batch prepared in a worker thread, forward passes
    under bf16 autocast where ``config.precision`` says, optional gradient checkpointing, batches of a fixed
    size or by a token budget. Before the first step the memory estimate is checked (``training.placement``).

    With an ``accelerator`` of several processes (``training.distributed``) every process walks the same global
    batches and trains on its share of each; the loss is normalised by the answer tokens of the whole global
    batch, so the gradient DDP averages is the one a single process computes on that batch.

    With ``config.early_stop`` the ``held_out`` samples' answer loss is measured before training and after
    every epoch (each process measures it alone: fine under DDP, not under FSDP's sharded weights); training
    ends at the first epoch that does not lower it by ``min_gain`` and the best epoch's weights are restored.

    With ``anchors`` and ``config.anchor_weight`` > 0 (a LoRA student, one process) every step adds the weighted
    KL from the untouched student to the trained one on a batch of anchors (``Anchors``, ``anchor_kl``).

    Returns ``{"losses", "steps", "seconds", "samples_per_s", "epochs_run", "held_out_losses", "best_epoch",
    "anchor_kl"}``; ``losses`` is the answer loss alone.
    """
    model = student.model
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: no parameter requires grad")
    if config.early_stop and (held_out is None or not held_out.samples):
        raise ValueError("early_stop needs held-out samples (the loop passes its val split)")
    group = ProcessGroup(accelerator)
    anchor_weight = getattr(config, "anchor_weight", 0.0)
    anchoring = anchor_weight > 0 and anchors is not None and bool(anchors.samples)
    if anchoring and (not student.is_peft or group.size > 1):
        raise ValueError("anchors need a LoRA student in one process (the untouched model is its adapter switched off)")
    plans, per_epoch_batches = plan_batches(student, samples, image_root, config)
    per_epoch = math.ceil(per_epoch_batches / config.grad_accum)
    total = min(per_epoch * config.epochs, config.max_steps or 1 << 62)
    compute_dtype = autocast_dtype(student.device, config.precision)
    trained = group.wrap(model)  # DDP (or FSDP, from accelerate's config) across processes; else the model
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = group.wrap_optimizer(torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay))
    if config.early_stop:  # warm up over a share of one epoch, then hold: the held-out loss ends training
        scheduler = linear_schedule(optimizer, round(config.warmup_ratio * per_epoch), None)
        stop = EarlyStop(held_out, config, student, params)
    else:
        scheduler = linear_schedule(optimizer, round(config.warmup_ratio * total), total)
        stop = None
    forward = dataclasses.replace(student, model=trained)
    losses: list[float] = []
    seen, step, window, checked, measured = 0, 0, [], False, 0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress or not group.is_main)
    start = time.perf_counter()

    def make(job: tuple[tuple[int, int, list[int]], list[int] | None]):
        plan, anchor_rows = job
        rows, weight = group.share(plan[2])
        items = items_from_samples([samples[i] for i in rows], image_root, with_answer=True)
        anchor_batch = None if anchor_rows is None else build_inputs(student, items_from_samples(
            [anchors.samples[i] for i in anchor_rows], anchors.image_root, with_answer=True))
        return build_inputs(student, items), weight, anchor_batch

    # anchoring implies a LoraTrainConfig (only it has anchor_weight), so its batch size is there
    anchor_rows = anchors.rows(config.anchor_batch_size, config.seed) if anchoring else repeat(None)
    kls: list[float] = []
    model.train()
    with checkpointing(model, config.gradient_checkpointing):
        jobs = zip(plans, anchor_rows, strict=False)  # the anchor rows never end: the plans decide
        for ((epoch, number, index), _), (batch, weight, anchor_batch) in prefetched(make, jobs):
            if not checked:
                check_training_memory(student, batch, config, compute_dtype, group.size)
                checked = True
            boundary = not ((number + 1) % config.grad_accum and number + 1 < per_epoch_batches)
            with group.no_sync(trained, enabled=not boundary):
                with autocast(student.device, compute_dtype):
                    mean = answer_nll(forward, batch)
                count = (batch["labels"] != IGNORE_INDEX).sum().float() * weight
                everywhere = group.sum(count)  # answer tokens of the global batch (this count, in one process)
                loss = share_loss(mean, count, everywhere, group.size)  # x 1.0 exactly in one process
                if anchor_batch is not None:
                    with autocast(student.device, compute_dtype):
                        kl = anchor_kl(forward, anchor_batch)
                    loss = loss + anchor_weight * kl
                    kls.append(kl.item())
                (loss / config.grad_accum).backward()
            window.append(mean.item() if group.size == 1 else (group.sum(mean.detach() * count) / everywhere).item())
            seen += len(index)
            if not boundary:
                continue  # accumulate; an epoch's last, partial window still steps
            if config.max_grad_norm:
                group.clip(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(sum(window) / len(window))
            window, step = [], step + 1
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", epoch=epoch + 1, samples_s=f"{seen / elapsed:.1f}")
            if stop is not None and number + 1 == per_epoch_batches:
                measured = step
                if stop.after_epoch(epoch + 1):
                    break
            if step >= total:
                break
    bar.close()
    if stop is not None:
        if step > measured:  # cut by max_steps inside an epoch: that part is a candidate too
            stop.after_epoch(epoch + 1)
        stop.restore()
    model.eval()
    seconds = time.perf_counter() - start
    return {"losses": losses, "steps": step, "seconds": seconds,
            "samples_per_s": seen / seconds if seconds > 0 else 0.0, "epochs_run": seen / max(1, len(samples)),
            "held_out_losses": stop.losses if stop else [], "best_epoch": stop.best_epoch if stop else None,
            "kept_start": bool(stop and stop.kept_start), "anchor_kl": kls}


# --- LoRA ------------------------------------------------------------------------------------------


def find_projector(model: torch.nn.Module) -> str | None:
    """The module name of the vision-to-text projector (the main one, when there are several)."""
    projectors = projector_modules(model)
    return projectors[0] if projectors else None


def projector_modules(model: torch.nn.Module) -> list[str]:
    """Every projector module, main one first, resolved from the model (training/anatomy.py); for a model that
    does not name its language model, the shortest module with a known projector name."""
    try:
        return list(anatomy(model).projectors)
    except ValueError:
        for name in PROJECTOR_NAMES:
            hits = [n for n, _ in model.named_modules() if n.split(".")[-1] == name]
            if hits:
                return [min(hits, key=len)]
        return []


def resolve_target(model: torch.nn.Module, pattern: str | None) -> str:
    """The LoRA target regex: ``pattern`` as given, else the language model's linear layers of this model."""
    if pattern is not None:
        return pattern
    try:
        return anatomy(model).lora_target
    except ValueError as err:
        log.warning("%s; falling back to the generic target regex", err)
        return DEFAULT_TARGET


def lora_targets(model: torch.nn.Module, pattern: str) -> list[str]:
    """Names of the linear modules the regex selects (what PEFT will wrap); checked before wrapping."""
    import re

    regex = re.compile(pattern)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and regex.fullmatch(n)]


def attach_lora(student: Student, config: LoraTrainConfig) -> str | None:
    """Wrap the student's model with a fresh LoRA adapter (in place); returns the projector trained, if any.

    Targets: ``config.target``, else every linear layer of the language model; the projector modules go to
    ``modules_to_save`` by their full names (PEFT matches them by suffix: a bare ``"merger"`` could also
    catch an unrelated module ending in it).
    """
    from peft import LoraConfig, get_peft_model

    target = resolve_target(student.model, config.target)
    targets = lora_targets(student.model, target)
    if not targets:
        raise ValueError(f"LoRA target regex {target!r} matches no linear module of {student.name}")
    projectors = projector_modules(student.model) if config.train_projector else []
    if config.train_projector and not projectors:
        log.warning("%s: no known projector module; training LoRA only", student.name)
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=target,
        modules_to_save=projectors or None, bias="none",
    )
    with quiet_peft():
        student.model = get_peft_model(student.model, lora)
    return projectors[0] if projectors else None


def make_adapter_trainable(model: torch.nn.Module) -> None:
    """A loaded adapter continues training: its LoRA and saved-module weights train, nothing else."""
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name or ".modules_to_save." in name


def train_lora(
    student: Student,
    samples: Sequence[Sample],
    image_root: Path | None,
    config: LoraTrainConfig,
    out_dir: Path | str,
    *,
    replay: Iterable[Sample] = (),
    progress: bool = True,
    accelerator: Any = None,
    held_out: HeldOut | None = None,
    anchors: Anchors | None = None,
    finish: Callable[[Student, dict[str, torch.Tensor]], None] | None = None,
) -> TrainReport:
    """LoRA-tune the student on ``samples`` + replay; continues its adapter if it has one; saves to ``out_dir``.
    ``held_out``: what ``config.early_stop`` measures; ``anchors``: what ``config.anchor_weight`` keeps;
    ``finish(student, start)``: called after training, before saving, with the trainable weights as they were at
    the start (by name): it may move the weights (the loop chooses an operating point with ``blend``).

    A continued adapter keeps the LoRA settings it was created with (rank, targets, trained projector);
    ``config`` then only sets the optimisation (lr, epochs, batch, seed, replay). With an ``accelerator`` of
    several processes (``training.distributed``) they train together and the main process saves.
    """
    out = Path(out_dir)
    replayed = mix_replay(samples, replay, config.replay_ratio, config.seed)
    train_set = [*samples, *replayed]
    with deterministic(config.seed):
        continued = student.is_peft
        if continued:
            make_adapter_trainable(student.model)
            projector = _saved_projector(student.model)
        else:
            projector = attach_lora(student, config)
        start = trainable_weights(student.model) if finish is not None else {}
        stats = (run_training(student, train_set, image_root, config, progress=progress, desc="lora",
                              accelerator=accelerator, held_out=held_out, anchors=anchors)
                 if train_set else _no_training())
        if finish is not None:
            finish(student, start)
    anchor_ids = [a.id for a in anchors.samples] if anchors and stats["anchor_kl"] else []
    report = _report(student, out, "lora", samples, replayed, stats, config, continued=continued, projector=projector,
                     anchor_ids=anchor_ids)
    group = ProcessGroup(accelerator)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        student.model.save_pretrained(out)
        _write_report(out, report)
    group.barrier()  # the adapter is whole before any process returns
    return report


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every trainable parameter (LoRA and the fully trained projector), by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def blend(model: torch.nn.Module, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float) -> None:
    """Move the trainable weights between a round's start (``alpha`` 0) and its end (1): each weight to
    ``start + alpha * (end - start)``. A LoRA pair whose B started at zero (a fresh adapter) keeps its trained A,
    so its update B·A is scaled by exactly alpha, like the projector's; a continued adapter moves along the
    straight line between its two sets of weights."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, first in start.items():
            fresh_pair = ".lora_A." in name and not start[name.replace(".lora_A.", ".lora_B.")].any()
            params[name].copy_(end[name] if fresh_pair else torch.lerp(first, end[name], alpha))


def _saved_projector(model: torch.nn.Module) -> str | None:
    names = {n.split(".modules_to_save.")[0] for n, _ in model.named_modules() if ".modules_to_save." in n}
    return min(names, key=len) if names else None


# --- full fine-tuning --------------------------------------------------------------------------------


def train_full(
    student: Student,
    samples: Sequence[Sample],
    image_root: Path | None,
    config: TrainConfig,
    out_dir: Path | str,
    *,
    progress: bool = True,
) -> TrainReport:
    """Train every weight (pre-training a tiny student from scratch); saves model + processor to ``out_dir``."""
    if student.is_peft:
        raise ValueError("train_full trains a plain model; this student carries a PEFT adapter")
    out = Path(out_dir)
    with deterministic(config.seed):
        for param in student.model.parameters():
            param.requires_grad = True
        stats = run_training(student, list(samples), image_root, config, progress=progress, desc="full")
    out.mkdir(parents=True, exist_ok=True)
    student.model.save_pretrained(out)
    student.processor.save_pretrained(out)
    report = _report(student, out, "full", samples, [], stats, config)
    _write_report(out, report)
    return report


# --- reports ---------------------------------------------------------------------------------------


def _no_training() -> dict:
    log.warning("nothing to train on: the adapter is saved unchanged")
    return {"losses": [], "steps": 0, "seconds": 0.0, "samples_per_s": 0.0, "epochs_run": 0.0,
            "held_out_losses": [], "best_epoch": None, "kept_start": False, "anchor_kl": []}


def _report(student: Student, out: Path, mode: str, samples: Sequence[Sample], replayed: Sequence[Sample],
            stats: dict, config: TrainConfig, *, continued: bool = False, projector: str | None = None,
            anchor_ids: Sequence[str] = ()) -> TrainReport:
    params = list(student.model.parameters())
    losses = stats["losses"]
    return TrainReport(
        out_dir=str(out), mode=mode, n_selected=len(samples), n_replay=len(replayed),
        n_train=len(samples) + len(replayed), steps=stats["steps"], epochs_run=round(stats["epochs_run"], 4),
        losses=[round(x, 6) for x in losses], first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None, seconds=round(stats["seconds"], 3),
        samples_per_s=round(stats["samples_per_s"], 3),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params), continued_adapter=continued, projector=projector,
        held_out_losses=[round(x, 6) for x in stats["held_out_losses"]], best_epoch=stats["best_epoch"],
        kept_start=stats["kept_start"],
        anchor_kl=[round(x, 6) for x in stats["anchor_kl"]], anchor_ids=list(anchor_ids), config=config.model_dump(),
        selected_ids=[s.id for s in samples], replay_ids=[s.id for s in replayed],
    )


def _write_report(out: Path, report: TrainReport) -> None:
    write_json(out / "training.json", report)  # training.json marks a finished adapter (the loop checks for it)
