"""Training over several processes: the loss of each process's share of a global batch gives, once DDP has
averaged the gradients, exactly the one-process gradient; two real gloo processes launched with
``accelerate launch`` train the adapter one process trains on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.distributed import launch_command, share_loss, share_of
from tutorloop.training.lora import attach_lora, train_lora
from tutorloop.training.student import (
    IGNORE_INDEX,
    answer_nll,
    build_inputs,
    items_from_samples,
    load_student,
)

from ..conftest import COLOUR_QUESTION, make_sample

REPO = Path(__file__).resolve().parents[2]


def test_shares_split_a_global_batch_and_an_empty_share_gets_weight_zero():
    assert share_of([5, 1, 4, 2, 3], 0, 2) == ([5, 4, 3], 1)
    assert share_of([5, 1, 4, 2, 3], 1, 2) == ([1, 2], 1)
    assert share_of([7], 1, 2) == ([7], 0)  # a one-row last batch: process 1 joins the all-reduce with weight 0
    assert share_of([5, 1, 4], 0, 1) == ([5, 1, 4], 1)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_share_losses_averaged_like_ddp_give_the_global_batch_gradient(tiny_llava, tiny_data):
    student = load_student(tiny_llava, device="cpu")
    attach_lora(student, LoraTrainConfig(dropout=0.0))
    student.model.train()
    # unequal shares: answers of 1 and 3 words, prompts of two lengths, and an empty share padded with a row
    long_answer = make_sample("long", tiny_data.samples[2].image, COLOUR_QUESTION, "red square circle", "x")
    samples = [tiny_data.samples[0], tiny_data.yes_no[1], long_answer]

    def batch(rows):
        return build_inputs(student, items_from_samples([samples[i] for i in rows], tiny_data.root, with_answer=True))

    answer_nll(student, batch([0, 1, 2])).backward()
    whole = _grads(student.model)
    for world, shares in ((2, [[0, 2], [1]]), (3, [[0], [1], [2]]), (2, [[0, 1, 2], None])):
        student.model.zero_grad(set_to_none=True)
        built = [(batch(rows), 1) if rows else (batch([0]), 0) for rows in shares]
        counts = [(b["labels"] != IGNORE_INDEX).sum().float() * w for b, w in built]
        everywhere = sum(counts)
        for (b, _), count in zip(built, counts, strict=True):
            (share_loss(answer_nll(student, b), count, everywhere, world) / world).backward()  # DDP: mean of grads
        for name, grad in _grads(student.model).items():
            torch.testing.assert_close(grad, whole[name], rtol=1e-4, atol=1e-7, msg=f"{world} processes: {name}")
        if world == 3:  # the per-share mean averaged (the naive loss) is a different gradient here
            student.model.zero_grad(set_to_none=True)
            for b, _ in built:
                (answer_nll(student, b) / world).backward()
            naive = _grads(student.model)
            assert any(not torch.allclose(naive[n], whole[n], rtol=1e-3, atol=1e-6) for n in whole)


@pytest.mark.slow
@pytest.mark.integration
def test_two_gloo_processes_train_the_one_process_adapter(tiny_llava, tiny_data, tmp_path):
    """13 samples, global batch 4, two batches per optimizer step, 2 epochs: each epoch's last batch has one
    row, so process 1 trains an empty (weight 0) share there.

    Tolerance 1e-4 on every adapter weight: the two runs do the same arithmetic except that each share is
    padded to its own longest row (positions shift; RoPE makes the attention scores equal only up to rounding)
    and that gradients are summed by an all-reduce instead of within one batch: float32 rounding, measured
    at ~3e-6 after 4 AdamW steps. An error in the share weighting moves weights by a sizeable part of one
    step (lr 5e-3), far above 1e-4; the adapter moved from its initialisation by more than 100x the tolerance.
    """
    data = tiny_data.write("distributed-train.jsonl", tiny_data.samples[:13])
    settings = {"batch_size": 4, "grad_accum": 2, "epochs": 2, "lr": 5e-3, "dropout": 0.0, "seed": 3}
    args = ["--student", str(tiny_llava), "--data", str(data), "--out", str(tmp_path / "two"), "--threads", "1",
            *(f"--set={k}={v}" for k, v in settings.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(launch_command(2, args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["processes"] == 2 and printed["steps"] == 4

    one = train_lora(load_student(tiny_llava, device="cpu"), tiny_data.samples[:13], tiny_data.root,
                     LoraTrainConfig(**settings), tmp_path / "one", progress=False)
    two = json.loads((tmp_path / "two" / "training.json").read_text())
    assert two["steps"] == one.steps == 4 and two["n_train"] == 13
    assert two["losses"] == pytest.approx(one.losses, rel=1e-5)
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=key)
    moved = max(a[k].abs().max().item() for k in a if "lora_B" in k)  # lora_B starts at zero
    assert moved > 100 * 1e-4, moved
