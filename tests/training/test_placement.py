"""Memory estimates and placement: counts from checkpoint headers, the parts of a training estimate, the
refusal with its numbers (before loading and before training), SDPA with the eager fallback, device_map."""

from __future__ import annotations

import logging

import pytest
import torch

from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.lora import attach_lora, train_lora
from tutorloop.training.placement import (
    GIB,
    StudentDoesNotFit,
    TextDims,
    activation_bytes,
    checkpoint_parameters,
    ensure_fits,
    estimate_loading,
    estimate_training,
    free_bytes,
    load_with_attention,
)
from tutorloop.training.student import build_inputs, items_from_samples, load_student


def test_checkpoint_headers_count_the_parameters_without_loading(tiny_student_dir, tmp_path):
    model = load_student(tiny_student_dir, device="cpu").model
    assert checkpoint_parameters(tiny_student_dir) == sum(p.numel() for p in model.parameters())
    assert checkpoint_parameters(tmp_path) is None  # no safetensors: no count, no check


def test_training_estimate_counts_frozen_weights_and_adam_state_of_trainables(tiny_llava):
    student = load_student(tiny_llava, device="cpu")
    attach_lora(student, LoraTrainConfig())
    trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in student.model.parameters() if not p.requires_grad)
    est = estimate_training(student.model, tokens=512, logit_tokens=64, compute_dtype=torch.float32)
    assert est.trainable_state == 16 * trainable  # fp32 weight + grad + two AdamW moments
    assert est.weights == 4 * frozen and est.resident == est.weights
    assert est.total == est.weights + est.trainable_state + est.activations + est.margin
    assert est.still_needed == est.total - est.weights
    half = estimate_training(student.model, tokens=512, logit_tokens=64, compute_dtype=torch.float32,
                             weight_dtype=torch.bfloat16, loaded=False)
    assert half.weights == 2 * frozen and half.resident == 0


def test_activation_estimate_scales_with_tokens_and_checkpointing_cuts_it():
    dims = TextDims(hidden=1536, intermediate=8960, layers=28, kv_dim=256, vocab=151936)  # Qwen2-VL-2B's LM
    full = activation_bytes(dims, 4096, 0, torch.bfloat16)
    assert activation_bytes(dims, 8192, 0, torch.bfloat16) == 2 * full
    ckpt = activation_bytes(dims, 4096, 0, torch.bfloat16, checkpointing=True)
    assert ckpt < full / 5  # 28 layer inputs + one layer's full set, instead of 28 full sets
    head = activation_bytes(dims, 4096, 512, torch.bfloat16) - full
    assert head == 512 * 151936 * (2 + 8)
    assert activation_bytes(dims, 4096, 0, torch.bfloat16, lora_dropout=True) > full
    assert activation_bytes(dims, 4096, 0, torch.float32) == 2 * full


def test_refusal_states_the_numbers_and_what_to_change():
    est = estimate_loading(2_000_000_000, torch.bfloat16)
    with pytest.raises(StudentDoesNotFit, match=r"needs an estimated 4\.10 GiB.*weights 3\.73 GiB.*the limit of 2 GiB"
                       r".*bf16"):
        ensure_fits(est, "cpu", what="student x", advice="Load in bf16.", limit_gb=2)
    ensure_fits(est, "cpu", what="student x", advice="", limit_gb=5)  # fits: no error
    assert free_bytes("cpu") > 0
    huge = estimate_loading(10 * free_bytes("cpu") // 4 + GIB, torch.float32)  # over the machine's free RAM
    with pytest.raises(StudentDoesNotFit, match=r"free on cpu"):
        ensure_fits(huge, "cpu", what="student x", advice="")


def test_load_student_refuses_before_loading_when_the_weights_do_not_fit(tiny_llava):
    n = checkpoint_parameters(tiny_llava)
    limit = n * 4 / 2 / GIB  # half of the fp32 weights
    with pytest.raises(StudentDoesNotFit, match=rf"{n:,} parameters.*limit of {limit:g} GiB.*device_map='auto'"):
        load_student(tiny_llava, device="cpu", memory_limit_gb=limit)
    assert load_student(tiny_llava, device="cpu", memory_limit_gb=1.0).model is not None


def test_training_refuses_with_the_estimate_and_writes_nothing(tiny_llava, tiny_data, tmp_path):
    student = load_student(tiny_llava, device="cpu")
    config = LoraTrainConfig(batch_size=8, epochs=1, memory_limit_gb=1e-4)  # 105 kB: less than the weights
    with pytest.raises(StudentDoesNotFit, match=r"training .*tokens per micro-batch.*activations.*"
                       r"gradient_checkpointing: true"):
        train_lora(student, tiny_data.samples, tiny_data.root, config, tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists()


def test_sdpa_is_requested_and_an_architecture_without_it_falls_back_to_eager(tiny_student_dir, tmp_path, caplog):
    assert load_student(tiny_student_dir, device="cpu").model.config._attn_implementation == "sdpa"
    assert load_student(tiny_student_dir, device="cpu", attn_implementation="eager").model.config._attn_implementation \
        == "eager"
    # GOT-OCR2 is an image-text-to-text architecture transformers gives no SDPA path: a real refusal to fall back from
    from transformers import AutoModelForImageTextToText, GotOcr2Config, GotOcr2ForConditionalGeneration

    config = GotOcr2Config(
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_dim": 64,
                       "image_size": 64, "patch_size": 16, "output_channels": 16, "global_attn_indexes": [0],
                       "window_size": 2},
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                     "intermediate_size": 64, "vocab_size": 128})
    GotOcr2ForConditionalGeneration(config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tutorloop.training.placement"):
        model = load_with_attention(AutoModelForImageTextToText.from_pretrained, str(tmp_path), "sdpa")
    assert model.config._attn_implementation == "eager"
    assert "no SDPA attention" in caplog.text and "eager" in caplog.text
    with pytest.raises(ValueError, match="flex"):  # any other error is not swallowed
        load_with_attention(AutoModelForImageTextToText.from_pretrained, str(tmp_path), "flex_attention")


def test_device_map_places_the_model_and_inputs_follow_it(tiny_llava, tiny_data):
    placed = load_student(tiny_llava, device_map="auto")  # accelerate's placement: all on the CPU here
    assert placed.device == torch.device("cpu") and {p.device.type for p in placed.model.parameters()} == {"cpu"}
    plain = load_student(tiny_llava, device="cpu")
    items = items_from_samples(tiny_data.samples[:2], tiny_data.root, with_answer=True)
    with torch.inference_mode():
        a = placed.model(**build_inputs(placed, items)).logits
        b = plain.model(**build_inputs(plain, items)).logits
    assert torch.equal(a, b)
