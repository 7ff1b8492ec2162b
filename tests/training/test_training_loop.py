"""The GPU-path switches of the training loop, checked on CPU: token-budget batches, bf16 autocast,
gradient checkpointing (same gradients, layers really recomputed)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.lora import (
    autocast_dtype,
    cut_by_budget,
    plan_batches,
    sample_lengths,
    token_budget_batches,
    train_lora,
)
from tutorloop.training.student import load_student

FAST = {"epochs": 2, "batch_size": 8, "lr": 5e-3, "dropout": 0.0}


def test_token_budget_batches_stay_under_budget_and_cover_each_epoch_once():
    lengths = [5, 40, 12, 12, 33, 7, 25, 40, 9, 18, 30, 11, 22, 6, 38, 15]
    plans = list(token_budget_batches(lengths, budget=80, epochs=3, seed=1))
    per_epoch = {e: [p for p in plans if p[0] == e] for e in range(3)}
    for epoch, batches in per_epoch.items():
        assert sorted(i for _, _, index in batches for i in index) == list(range(len(lengths))), epoch
        assert [number for _, number, _ in batches] == list(range(len(batches)))
        for _, _, index in batches:
            assert len(index) * max(lengths[i] for i in index) <= 80
    assert len({len(b) for b in per_epoch.values()}) == 1  # same count every epoch: the schedule is exact
    assert len(per_epoch[0]) == len(cut_by_budget(sorted(range(16), key=lambda i: lengths[i]), lengths, 80))
    assert plans == list(token_budget_batches(lengths, budget=80, epochs=3, seed=1))
    assert [p[2] for p in plans] != [p[2] for p in token_budget_batches(lengths, budget=80, epochs=3, seed=2)]
    # similar lengths travel together: far fewer padded tokens than a fixed batch of the same mean size
    padded = sum(len(i) * max(lengths[j] for j in i) for _, _, i in per_epoch[0])
    assert padded < 1.25 * sum(lengths)


def test_train_lora_by_token_budget(tiny_llava, tiny_data, tmp_path):
    student = load_student(tiny_llava, device="cpu")
    samples = [*tiny_data.samples, *tiny_data.yes_no]
    lengths = sample_lengths(student, samples, tiny_data.root)
    assert len(set(lengths)) > 1  # the two questions differ in length
    budget = 6 * max(lengths)
    plans, per_epoch = plan_batches(student, samples, tiny_data.root, LoraTrainConfig(max_tokens_per_batch=budget))
    plans = list(plans)
    assert per_epoch == len([p for p in plans if p[0] == 0])
    assert all(len(index) * max(lengths[i] for i in index) <= budget for _, _, index in plans)
    config = LoraTrainConfig(**FAST, max_tokens_per_batch=budget)
    report = train_lora(student, samples, tiny_data.root, config, tmp_path, progress=False)
    assert report.steps == 2 * per_epoch and report.last_loss < report.first_loss


def test_token_budget_below_a_sample_is_refused_by_name(tiny_llava, tiny_data):
    student = load_student(tiny_llava, device="cpu")
    lengths = sample_lengths(student, tiny_data.yes_no, tiny_data.root)
    with pytest.raises(ValueError, match=rf"max_tokens_per_batch=10 .*check-\d+ with {max(lengths)} tokens"):
        plan_batches(student, tiny_data.yes_no, tiny_data.root, LoraTrainConfig(max_tokens_per_batch=10))


def _projection_dtypes(student, config, samples, root, tmp_path):
    """Output dtypes of one language-model projection's frozen linear during training."""
    seen: set[torch.dtype] = set()
    train_lora(student, [], None, config, tmp_path / "init", progress=False)  # attaches LoRA
    layer = next(m for n, m in student.model.named_modules() if n.endswith("layers.0.self_attn.q_proj.base_layer"))
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    train_lora(student, samples, root, config, tmp_path / "run", progress=False)
    handle.remove()
    return seen


def test_bf16_autocast_on_cpu_runs_matmuls_in_bf16_and_trains(tiny_llava, tiny_data, tmp_path):
    assert autocast_dtype(torch.device("cpu"), "auto") is None  # CPU default: fp32, no autocast
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "fp32") is None
    config = LoraTrainConfig(**FAST)
    fp32 = _projection_dtypes(load_student(tiny_llava, device="cpu"), config, tiny_data.samples, tiny_data.root,
                              tmp_path / "fp32")
    student = load_student(tiny_llava, device="cpu")
    bf16 = _projection_dtypes(student, config.model_copy(update={"precision": "bf16"}), tiny_data.samples,
                              tiny_data.root, tmp_path / "bf16")
    assert fp32 == {torch.float32} and bf16 == {torch.bfloat16}
    report = train_lora(load_student(tiny_llava, device="cpu"), tiny_data.samples, tiny_data.root,
                        LoraTrainConfig(**{**FAST, "epochs": 4}, precision="bf16"), tmp_path / "b", progress=False)
    reference = train_lora(load_student(tiny_llava, device="cpu"), tiny_data.samples, tiny_data.root,
                           LoraTrainConfig(**{**FAST, "epochs": 4}), tmp_path / "f", progress=False)
    assert report.last_loss < report.first_loss
    assert report.first_loss == pytest.approx(reference.first_loss, rel=0.02)  # bf16 rounding, same model


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_adapter(tiny_llava, tiny_data, tmp_path):
    calls = {}
    for name, on in (("plain", False), ("ckpt", True)):
        student = load_student(tiny_llava, device="cpu")
        # a pre-hook of the layer's MLP, not a hook of the layer: transformers checkpoints a layer's forward inside
        # its hooks, and the recompute stops as soon as the last saved tensor is back (inside the MLP)
        mlp = student.model.model.language_model.layers[0].mlp
        count = [0]
        mlp.register_forward_pre_hook(lambda *_args, count=count: count.__setitem__(0, count[0] + 1))
        config = LoraTrainConfig(**{**FAST, "dropout": 0.1}, gradient_checkpointing=on)
        train_lora(student, tiny_data.samples, tiny_data.root, config, tmp_path / name, progress=False)
        calls[name] = count[0]
        base = student.model.get_base_model()
        assert not getattr(base, "is_activation_checkpointing", None) and not any(  # off again after training
            getattr(m, "gradient_checkpointing", False) for m in base.modules())
    steps = 2 * 2  # 16 samples / batch 8, 2 epochs
    assert calls == {"plain": steps, "ckpt": 2 * steps}  # every layer ran again in backward
    plain, ckpt = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("plain", "ckpt"))
    for key in plain:  # non-reentrant checkpointing replays the dropout RNG: the same training
        torch.testing.assert_close(ckpt[key], plain[key], rtol=0, atol=1e-6)
