"""Gradient features of samples: the LESS representation (Xia et al., 2024) of the `less` selector.

A short warm-up LoRA is trained on a small random draw of the pool with Adam; then every sample's gradient of
its answer loss with respect to the LoRA weights is taken at the warm-up weights (one sample at a time).
Pool samples are Adam-preconditioned — the step Adam would take from the warm-up's moments,
``m / sqrt(v + eps)`` with ``m, v`` updated by the sample's gradient — while the target's samples keep the plain
gradient, as in LESS. Both are projected to ``dim`` dimensions by one seeded Rademacher matrix (entries ±1/√dim,
generated block by block so it never sits whole in memory) and L2-normalised; the cosine of a pool sample's
feature to a target sample's estimates how much a step on the first lowers the loss of the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tutorloop.retrieval.records import Sample
from tutorloop.training.configs import LessConfig, LoraTrainConfig
from tutorloop.training.student import Student, answer_nll, build_inputs, items_from_samples

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # Adam's defaults, the warm-up's optimiser
_BLOCK = 8192  # parameters projected per generated block of the random matrix
_PROJECTED = 256  # samples whose gradients are held, then projected together


@dataclass
class AdamMoments:
    """Adam's first and second moments of the warm-up, flattened in the order of ``lora_parameters``."""

    m: torch.Tensor
    v: torch.Tensor


def lora_parameters(student: Student) -> list[torch.nn.Parameter]:
    return [p for name, p in student.model.named_parameters() if p.requires_grad and "lora_" in name]


def warm_up(student: Student, samples: Sequence[Sample], image_root: Path | None, config: LessConfig) -> AdamMoments:
    """Attach a fresh LoRA (language model only) to ``student`` and train it ``config.warmup_epochs`` over
    ``samples`` with Adam; returns Adam's moments. The student keeps the warm-up weights."""
    from tutorloop.training.lora import attach_lora, deterministic

    with deterministic(config.seed):
        attach_lora(student, LoraTrainConfig(rank=config.rank, alpha=2 * config.rank, dropout=0.0,
                                             train_projector=False, seed=config.seed))
        for name, param in student.model.named_parameters():
            param.requires_grad = "lora_" in name  # the warm-up's features are LoRA gradients, nothing else
        params = lora_parameters(student)
        optimizer = torch.optim.Adam(params, lr=config.warmup_lr, betas=(BETA1, BETA2), eps=EPS)
        generator = torch.Generator().manual_seed(config.seed)
        student.model.train()
        for _ in range(config.warmup_epochs):
            order = torch.randperm(len(samples), generator=generator).tolist()
            for start in range(0, len(order), config.batch_size):
                chunk = [samples[i] for i in order[start:start + config.batch_size]]
                loss = answer_nll(student, build_inputs(student, items_from_samples(chunk, image_root,
                                                                                   with_answer=True)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        student.model.eval()
    state = [optimizer.state[p] for p in params]
    if not all(state):  # no step was taken (no warm-up sample): Adam's moments start at zero
        zeros = torch.zeros(sum(p.numel() for p in params))
        return AdamMoments(zeros, zeros.clone())
    return AdamMoments(torch.cat([s["exp_avg"].flatten() for s in state]).float().cpu(),
                       torch.cat([s["exp_avg_sq"].flatten() for s in state]).float().cpu())


def sample_gradients(student: Student, samples: Sequence[Sample], image_root: Path | None) -> torch.Tensor:
    """(n, LoRA parameters): each sample's gradient of its mean answer loss, one backward pass per sample."""
    params = lora_parameters(student)
    rows = []
    for sample in samples:
        loss = answer_nll(student, build_inputs(student, items_from_samples([sample], image_root, with_answer=True)))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                               for g, p in zip(grads, params, strict=True)]).cpu())
    return torch.stack(rows) if rows else torch.zeros((0, sum(p.numel() for p in params)))


def adam_step(gradients: torch.Tensor, moments: AdamMoments) -> torch.Tensor:
    """The direction Adam would move after each gradient, from the warm-up's moments (LESS's pool features)."""
    m = BETA1 * moments.m + (1 - BETA1) * gradients
    v = BETA2 * moments.v + (1 - BETA2) * gradients ** 2
    return m / torch.sqrt(v + EPS)


def rademacher_project(rows: torch.Tensor, dim: int, seed: int) -> np.ndarray:
    """``rows @ R`` for the seeded Rademacher matrix R (±1/√dim), built one block of parameters at a time."""
    out = torch.zeros((rows.shape[0], dim))
    for start in range(0, rows.shape[1], _BLOCK):
        block = rows[:, start:start + _BLOCK]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        signs = torch.randint(0, 2, (block.shape[1], dim), generator=generator).float().mul_(2).sub_(1)
        out += block @ signs
    return (out / dim ** 0.5).numpy()


def gradient_features(student: Student, samples: Sequence[Sample], image_root: Path | None, config: LessConfig, *,
                      moments: AdamMoments | None = None, progress: bool = False, desc: str = "gradients"
                      ) -> np.ndarray:
    """(n, config.dim) unit vectors: projected gradients (Adam-preconditioned when ``moments`` are given)."""
    out = []
    # gradients are projected _PROJECTED rows at a time: generating the random matrix costs more than using it
    for start in tqdm(range(0, len(samples), _PROJECTED), desc=desc, unit="chunk", disable=not progress):
        grads = sample_gradients(student, samples[start:start + _PROJECTED], image_root)
        if moments is not None:
            grads = adam_step(grads, moments)
        out.append(rademacher_project(grads, config.dim, config.seed))
    features = np.concatenate(out) if out else np.zeros((0, config.dim), dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)
