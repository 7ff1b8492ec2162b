"""Costs at real sizes: Qwen2-VL-2B and Qwen2-VL-7B (their published dimensions), random weights built from
configs — nothing is downloaded.

CPU part (always; the model lives on the meta device, so a 7B costs no memory):
  * parameter counts: total, language model (decoder + LM head), vision tower, projector (the merger), set
    against the published sizes (2.21B, 8.29B);
  * the LoRA adapter of the product's default settings (``LoraTrainConfig()``: r=8 on every linear layer of
    the language model, the projector trained fully), attached to the meta model by the product's own
    ``attach_lora``: trainable parameters and megabytes as saved (LoRA in fp32 — PEFT keeps adapters fp32 on a
    bf16 base — and the projector copy in bf16);
  * the training memory estimate of ``training/placement.py`` for a stated micro-batch, with and without
    gradient checkpointing, against the meta model's real parameter bytes, and which GPU sizes it fits.

GPU part (``--gpu``; ``benchmarks/gpu.sh`` runs it in < 8 minutes on one GPU), the same random student, data
and number of steps for each trainer, in one run:
  * LoRA training samples/s and tokens/s, MFU and peak memory of our loop (``training.lora.run_training``)
    against TRL's ``SFTTrainer`` and a plain ``transformers.Trainer`` (same PEFT model, batch, lr, schedule,
    optimizer, clipping, bf16, no gradient checkpointing); warm-up steps excluded for all three;
  * evaluation throughput (``training.evaluate``: batched greedy generation) against batch 1;
  * the perturbation score (the loop's re-ranking score) per 1k samples against one training epoch on 1k.
  MFU counts the useful FLOPs of LoRA on a frozen base, the same for every trainer: forward and input-gradient
  matmuls of the language model (4 x its non-embedding parameters per token), attention (12 x layers x hidden
  x tokens^2), the vision tower forward (2 x its parameters per patch), the LM head on the answer tokens (the
  only ones the loss needs); a trainer that runs the head on every position does work MFU does not count.

``--smoke`` runs the GPU part on CPU with a tiny Qwen2-VL: it checks the code, its numbers mean nothing.

    .venv/bin/python benchmarks/real_sizes.py                  # CPU part -> benchmarks/results/real_sizes.json
    .venv/bin/python benchmarks/real_sizes.py --gpu            # + GPU part (bash benchmarks/gpu.sh)
    .venv/bin/python benchmarks/real_sizes.py --smoke          # GPU code path on CPU, tiny model (~1 minute)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024**3
PUBLISHED = {"2b": 2.21e9, "7b": 8.29e9}  # the model cards' "params" figures (Qwen2-VL-2B/7B-Instruct)
# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "4090": 165e12, "A6000": 155e12}
GPU_SIZES_GB = (24, 40, 80, 141)

# Qwen2-VL's published dimensions (config.json of Qwen/Qwen2-VL-2B-Instruct and -7B-Instruct).
VISION = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
          "temporal_patch_size": 2, "in_channels": 3}
TEXT = {
    "2b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie": True},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie": False},
    # --smoke: the same architecture at toy dims (the real vocabulary, so the LM head is still the big matmul)
    "smoke": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "vocab_size": 151936, "tie": False},
}
SMOKE_VISION = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def qwen2_vl_config(size: str, ids: dict | None = None) -> Any:
    from transformers import Qwen2VLConfig

    text = dict(TEXT[size])
    tie = text.pop("tie")
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2  # Qwen2-VL splits the rotary half-dimension 16:24:24 (t, h, w) at head_dim 128
    section = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    vision = {**VISION, **(SMOKE_VISION if size == "smoke" else {}), "hidden_size": text["hidden_size"]}
    return Qwen2VLConfig(
        text_config={**text, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}},
        vision_config=vision, tie_word_embeddings=tie, **(ids or {}),
    )


# --- CPU part: counts, adapter, memory estimate on the meta device -------------------------------------


def meta_model(config: Any) -> torch.nn.Module:
    from transformers import Qwen2VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_groups(model: torch.nn.Module) -> dict[str, int]:
    inner = model.model
    tied = model.lm_head.weight is inner.language_model.embed_tokens.weight
    projector = numel(inner.visual.merger)
    language = numel(inner.language_model) + (0 if tied else numel(model.lm_head))
    return {"total": numel(model), "language_model": language, "vision_tower": numel(inner.visual) - projector,
            "projector": projector, "embeddings": inner.language_model.embed_tokens.weight.numel(),
            "lm_head_tied": tied}


def attach_default_lora(model: torch.nn.Module, name: str) -> Any:
    """The product's default adapter on ``model`` through ``attach_lora`` (new tensors on the meta device too)."""
    from tutorloop.training.configs import LoraTrainConfig
    from tutorloop.training.lora import attach_lora
    from tutorloop.training.student import Student

    device = next(model.parameters()).device
    student = Student(model=model, processor=None, device=device, name=name)
    with torch.device(device):
        projector = attach_lora(student, LoraTrainConfig())
    return student, projector


def adapter_size(peft_model: torch.nn.Module) -> dict[str, Any]:
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [(n, p) for n, p in trainable if "lora_" in n]
    saved = [(n, p) for n, p in trainable if "lora_" not in n]
    return {
        "trainable_params": sum(p.numel() for _, p in trainable),
        "lora_params": sum(p.numel() for _, p in lora),
        "projector_params": sum(p.numel() for _, p in saved),
        "lora_dtype": str(lora[0][1].dtype) if lora else None,
        "projector_dtype": str(saved[0][1].dtype) if saved else None,
        "adapter_mb": sum(p.numel() * p.element_size() for _, p in trainable) / 1e6,
        "lora_targets": sum(1 for n, _ in peft_model.named_modules() if n.endswith(".lora_A")),
    }


def memory_rows(peft_model: torch.nn.Module, args: argparse.Namespace) -> list[dict]:
    from tutorloop.training.placement import estimate_training

    tokens = args.batch_size * args.tokens_per_sample
    logit_tokens = args.batch_size * (args.answer_tokens + 1)
    real_bytes = sum(p.numel() * p.element_size() for p in peft_model.parameters())
    rows = []
    for checkpointing in (False, True):
        est = estimate_training(peft_model, tokens=tokens, logit_tokens=logit_tokens, compute_dtype=torch.bfloat16,
                                checkpointing=checkpointing, lora_dropout=True, loaded=False)
        rows.append({
            "gradient_checkpointing": checkpointing, "tokens_per_micro_batch": tokens,
            "estimate_bytes": est.as_dict(), "estimate_gib": round(est.total / GIB, 2),
            "meta_model_parameter_bytes": real_bytes,
            # the estimate's weight terms (frozen weights + one copy of each trainable) over the meta model's real
            # bytes: 1.0 when the estimate reads the model as built (the activation term is checked on a GPU)
            "weight_terms_over_meta_parameter_bytes": round((est.weights + est.trainable_state / 4) / real_bytes, 4),
            "fits_gpu_gb": {str(g): est.total <= g * 1e9 for g in GPU_SIZES_GB},
        })
    return rows


def cpu_part(args: argparse.Namespace) -> dict:
    out = {}
    for size in ("2b", "7b"):
        start = time.perf_counter()
        model = meta_model(qwen2_vl_config(size))
        groups = parameter_groups(model)
        peft_model, projector = attach_default_lora(model, f"qwen2-vl-{size}")
        peft_model = peft_model.model
        out[size] = {
            "parameters": groups,
            "published_params": PUBLISHED[size],
            "total_over_published": round(groups["total"] / PUBLISHED[size], 4),
            "adapter": {**adapter_size(peft_model), "projector_module": projector},
            "memory": memory_rows(peft_model, args),
            "seconds": round(time.perf_counter() - start, 2),
        }
        print(f"{size}: {groups['total'] / 1e9:.3f}B parameters (LM {groups['language_model'] / 1e9:.3f}B, vision "
              f"{groups['vision_tower'] / 1e6:.0f}M, projector {groups['projector'] / 1e6:.1f}M); adapter "
              f"{out[size]['adapter']['trainable_params'] / 1e6:.1f}M params = {out[size]['adapter']['adapter_mb']:.0f} MB;"
              f" estimate {out[size]['memory'][0]['estimate_gib']} GiB (checkpointing: "
              f"{out[size]['memory'][1]['estimate_gib']} GiB)", flush=True)
        del model, peft_model
    return out


# --- GPU part: the same student, data and steps for three trainers ---------------------------------------

WORDS = ["red", "blue", "green", "yellow", "purple", "orange", "square", "circle", "triangle", "star", "left", "right", "top", "bottom", "middle", "small", "large", "one", "two", "three", "four", "five", "shape", "colour", "picture", "image", "there", "is", "are", "the", "a", "of", "in", "on", "and", "with", "next", "to", "above", "below", "near", "far", "count", "how", "many", "what", "which", "where", "describe", "answer", "question", "look", "see", "find"]


def make_processor(size: str) -> Any:
    """An offline Qwen2-VL processor: the architecture's chat template, special tokens and image processor
    (``training/architectures.py``), a word-level tokenizer over the benchmark's words."""
    from transformers import Qwen2VLProcessor

    from lab.architectures import (
        QWEN2_VL_TEMPLATE,
        _qwen_image_processor,
        _qwen_tokenizer,
        _video_free,
    )

    tokenizer = _qwen_tokenizer([" ".join(WORDS)], QWEN2_VL_TEMPLATE)
    image_processor = _qwen_image_processor(image_px(size), VISION["patch_size"])
    return _video_free(Qwen2VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                         chat_template=QWEN2_VL_TEMPLATE)


def make_student(size: str, device: torch.device, seed: int = 0) -> Any:
    """A Qwen2-VL of ``size`` with random weights on ``device`` (bf16 on CUDA, fp32 on CPU; the meta device
    gives a shape-only student for measuring lengths), SDPA attention."""
    from transformers import Qwen2VLForConditionalGeneration

    from lab.architectures import _qwen_ids
    from tutorloop.training.student import Student

    processor = make_processor(size)
    tokenizer = processor.tokenizer
    config = qwen2_vl_config(size, _qwen_ids(tokenizer))
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    for settings in (model.config.get_text_config(), model.generation_config):  # what TRL would align otherwise
        settings.pad_token_id, settings.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    model.eval()
    return Student(model=model, processor=processor, device=device, name=f"qwen2-vl-{size} (random)")


def image_px(size: str) -> int:
    return 56 if size == "smoke" else 448  # 448 px: 1,024 patches, 256 image tokens after the 2x2 merge


def make_data(folder: Path, n: int, px: int, seed: int = 0, answer_words: int = 24) -> list:
    """``n`` samples: a picture of a few coloured shapes, a ~16-word question and an ``answer_words`` answer."""
    from PIL import Image, ImageDraw

    from tutorloop.retrieval.records import Sample

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    colours = [(220, 40, 40), (40, 60, 220), (40, 180, 60), (230, 210, 40), (150, 50, 180)]
    samples = []
    for i in range(n):
        image = Image.new("RGB", (px, px), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            x, y, r = rng.randrange(px), rng.randrange(px), rng.randint(px // 16, px // 6)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(colours))
        name = f"images/{i:05d}.png"
        image.save(folder / name)
        question = " ".join(rng.choice(WORDS) for _ in range(16)) + "?"
        answer = " ".join(rng.choice(WORDS) for _ in range(answer_words))
        samples.append(Sample.model_validate({
            "id": f"real-{i:05d}", "image": name,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}))
    return samples


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def lora_config(args: argparse.Namespace, steps: int) -> Any:
    from tutorloop.training.configs import LoraTrainConfig

    return LoraTrainConfig(lr=1e-4, epochs=1000, max_steps=steps, batch_size=args.train_batch, warmup_ratio=0.1,
                           max_grad_norm=1.0, seed=0)


def run_ours(args, size: str, samples: list, root: Path) -> dict:
    from tutorloop.training.lora import attach_lora, deterministic, run_training

    student = make_student(size, args.device)
    config = lora_config(args, args.warmup_steps)
    with deterministic(0):
        attach_lora(student, config)
        estimate = training_estimate(student, samples[: args.train_batch], root)
        run_training(student, samples, root, config, progress=False)  # warm-up: allocator, kernels, first batches
        reset_peak(args.device)
        stats = run_training(student, samples, root, lora_config(args, args.steps), progress=False)
    synchronize(args.device)
    result = {"seconds": stats["seconds"], "steps": stats["steps"], "peak_gb": peak_gb(args.device),
              "placement_estimate_gb": estimate / 1e9}
    del student
    return result


def training_estimate(student: Any, batch: list, root: Path) -> int:
    """``training/placement.py``'s estimate for one micro-batch of ``batch`` (to set against the measured peak)."""
    from tutorloop.training.placement import estimate_training
    from tutorloop.training.student import IGNORE_INDEX, build_inputs, items_from_samples

    inputs = build_inputs(student, items_from_samples(batch, root, with_answer=True))
    width = int((inputs["labels"] != IGNORE_INDEX).sum(1).max())
    return estimate_training(student.model, tokens=inputs["input_ids"].numel(),
                             logit_tokens=len(batch) * (width + 1), compute_dtype=torch.bfloat16,
                             lora_dropout=True).total


def step_clock(device: torch.device, warmup: int) -> Any:
    """A TrainerCallback noting the time of every optimizer step (after a device sync); it resets the peak
    memory once the warm-up steps are done, as ours does between its warm-up and measured runs."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, _args, state, control, **kwargs):
            synchronize(device)
            self.times.append(time.perf_counter())
            if len(self.times) == warmup:
                reset_peak(device)

    return StepClock()


def trainer_arguments(args, scratch: Path, cls: Any, **extra: Any) -> Any:
    return cls(
        output_dir=str(scratch), per_device_train_batch_size=args.train_batch, max_steps=args.warmup_steps + args.steps,
        learning_rate=1e-4, lr_scheduler_type="linear", warmup_steps=round(0.1 * (args.warmup_steps + args.steps)),
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=0, bf16=args.device.type == "cuda",
        gradient_checkpointing=False, save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=args.device.type == "cuda", use_cpu=args.device.type == "cpu", **extra,
    )


def timed_steps(clock: Any, args) -> float:
    """Seconds of the measured steps (after the warm-up ones)."""
    times = clock.times
    return times[-1] - times[args.warmup_steps - 1] if args.warmup_steps else times[-1] - times[0]


def run_trainer(args, size: str, samples: list, root: Path, scratch: Path) -> dict:
    from transformers import Trainer, TrainingArguments

    from tutorloop.training.lora import attach_lora, deterministic
    from tutorloop.training.student import build_inputs, items_from_samples

    student = make_student(size, args.device)
    with deterministic(0):
        attach_lora(student, lora_config(args, 1))

    def collate(batch):
        return dict(build_inputs(student, items_from_samples(batch, root, with_answer=True)))

    clock = step_clock(args.device, args.warmup_steps)
    trainer = Trainer(model=student.model, args=trainer_arguments(args, scratch, TrainingArguments),
                      train_dataset=samples, data_collator=collate, callbacks=[clock])
    trainer.train()
    return {"seconds": timed_steps(clock, args), "steps": args.steps, "peak_gb": peak_gb(args.device)}


def sft_dataset(samples: list, root: Path) -> Any:
    """The same samples as TRL's conversational prompt-completion records with their images (loss on the
    completion only, as ours)."""
    import datasets
    from PIL import Image

    rows = [{"images": [Image.open(root / s.images[0]).convert("RGB")],
             "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}],
             "completion": [{"role": "assistant", "content": [{"type": "text", "text": s.reference}]}]}
            for s in samples]
    return datasets.Dataset.from_list(rows)


def run_sft(args, size: str, samples: list, root: Path, scratch: Path) -> dict:
    from trl import SFTConfig, SFTTrainer

    from tutorloop.training.lora import attach_lora, deterministic

    student = make_student(size, args.device)
    with deterministic(0):
        attach_lora(student, lora_config(args, 1))
    clock = step_clock(args.device, args.warmup_steps)
    config = trainer_arguments(args, scratch, SFTConfig, max_length=None, packing=False, padding_free=False,
                               completion_only_loss=True, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = SFTTrainer(model=student.model, args=config, train_dataset=sft_dataset(samples, root),
                         processing_class=student.processor, callbacks=[clock])
    trainer.train()
    result = {"seconds": timed_steps(clock, args), "steps": args.steps, "peak_gb": peak_gb(args.device)}
    del trainer, student
    return result


def flops_per_sample(model: torch.nn.Module, tokens: float, answer_tokens: float, patches: float) -> float:
    """Useful FLOPs of one LoRA training sample on a frozen base (see the module doc)."""
    text = model.config.get_text_config()
    groups = parameter_groups(model)
    lm_body = groups["language_model"] - groups["embeddings"] - (0 if groups["lm_head_tied"] else groups["embeddings"])
    head = text.hidden_size * text.vocab_size
    attention = 12 * text.num_hidden_layers * text.hidden_size * tokens**2
    return 4 * lm_body * tokens + attention + 2 * groups["vision_tower"] * patches + 6 * head * answer_tokens


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, "given"
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return value, name
    return None, name


def eval_rates(args, size: str, samples: list, root: Path) -> dict:
    from tutorloop.training.evaluate import evaluate

    student = make_student(size, args.device)
    rates = {}
    for batch in (args.eval_batch, 1):
        subset = samples[: args.eval_samples if batch > 1 else max(2, args.eval_samples // 4)]
        evaluate(student, subset[:batch], root, batch_size=batch, max_new_tokens=args.max_new_tokens, progress=False)
        synchronize(args.device)
        start = time.perf_counter()
        evaluate(student, subset, root, batch_size=batch, max_new_tokens=args.max_new_tokens, progress=False)
        synchronize(args.device)
        rates[f"batch_{batch}_samples_per_s"] = len(subset) / (time.perf_counter() - start)
    rates["batching_speedup"] = rates[f"batch_{args.eval_batch}_samples_per_s"] / rates["batch_1_samples_per_s"]
    from tutorloop.training.scores import perturbation_distance

    subset = samples[: args.score_samples]
    perturbation_distance(student, subset[:8], root, n_words=2, m=3, seed=0, batch_size=args.eval_batch)
    synchronize(args.device)
    start = time.perf_counter()
    perturbation_distance(student, subset, root, n_words=2, m=3, seed=0, batch_size=args.eval_batch)
    synchronize(args.device)
    rates["perturbation_score_seconds_per_1k"] = (time.perf_counter() - start) * 1000 / len(subset)
    del student
    return rates


def gpu_part(args: argparse.Namespace, deadline: float, save: Any) -> dict:
    """Each size in turn; ``save(out)`` after every measurement, so a run cut short keeps what it measured."""
    from tutorloop.training.lora import sample_lengths

    out: dict[str, Any] = {}
    peak, device_name = peak_flops(args.device, args.peak_tflops)
    out["device"] = {"name": device_name, "peak_bf16_flops": peak}
    for size in args.sizes:
        if time.perf_counter() > deadline:
            out[size] = {"skipped": "time budget spent before this size"}
            continue
        with tempfile.TemporaryDirectory(prefix="tutorloop-real-sizes-") as tmp:
            tmp_path = Path(tmp)
            px = image_px(size)
            n = args.train_batch * (args.warmup_steps + args.steps)
            samples = make_data(tmp_path / "data", max(n, args.eval_samples, args.score_samples), px)
            root = tmp_path / "data"
            probe = make_student(size, torch.device("meta"))  # shapes only: lengths and FLOPs
            lengths = sample_lengths(probe, samples[:64], root)
            answers = statistics.mean(len(probe.tokenizer(f" {s.reference}<|im_end|>", add_special_tokens=False)
                                          ["input_ids"]) for s in samples[:64])
            patches = (px // VISION["patch_size"]) ** 2
            flops = flops_per_sample(probe.model, statistics.mean(lengths), answers, patches)
            del probe
            tokens = statistics.mean(lengths)
            size_out: dict[str, Any] = {"tokens_per_sample": tokens, "answer_tokens_per_sample": answers,
                                        "image_px": px, "flops_per_sample": flops, "train_batch": args.train_batch,
                                        "steps_measured": args.steps, "warmup_steps": args.warmup_steps}
            out[size] = size_out
            runners = {"ours": partial(run_ours, args, size, samples, root),
                       "transformers_trainer": partial(run_trainer, args, size, samples, root, tmp_path / "trainer"),
                       "trl_sft_trainer": partial(run_sft, args, size, samples, root, tmp_path / "sft")}
            for name, run in runners.items():
                if time.perf_counter() > deadline:
                    size_out[name] = {"skipped": "time budget spent"}
                    continue
                try:
                    result = run()
                except Exception as err:  # a baseline that breaks is reported, not fatal to the others
                    size_out[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
                    print(f"{size} {name}: {size_out[name]['error']}", flush=True)
                    continue
                rate = result["steps"] * args.train_batch / result["seconds"]
                result.update(samples_per_s=rate, tokens_per_s=rate * tokens,
                              mfu=rate * flops / peak if peak else None)
                size_out[name] = result
                print(f"{size} {name}: {rate:.2f} samples/s, {rate * tokens:.0f} tokens/s, MFU "
                      f"{result['mfu'] if result['mfu'] is None else round(result['mfu'], 3)}, peak "
                      f"{result['peak_gb']} GB", flush=True)
                reset_peak(args.device)
                save(out)
            for base in ("trl_sft_trainer", "transformers_trainer"):
                if "samples_per_s" in size_out.get("ours", {}) and "samples_per_s" in size_out.get(base, {}):
                    size_out[f"ours_over_{base}"] = size_out["ours"]["samples_per_s"] / size_out[base]["samples_per_s"]
            if time.perf_counter() < deadline:
                size_out["evaluation_and_scoring"] = eval_rates(args, size, samples, root)
                reset_peak(args.device)
            save(out)
    return out


# --- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--gpu", action="store_true", help="also run the GPU part (needs CUDA)")
    parser.add_argument("--smoke", action="store_true", help="the GPU part on CPU with a tiny Qwen2-VL (checks code)")
    parser.add_argument("--sizes", default="2b,7b", help="GPU part: sizes to run (default: 2b,7b)")
    parser.add_argument("--batch-size", type=int, default=16, help="CPU estimate: micro-batch rows (default: 16)")
    parser.add_argument("--tokens-per-sample", type=int, default=384,
                        help="CPU estimate: tokens per sample (default 384: a 448 px image = 256 tokens + text)")
    parser.add_argument("--answer-tokens", type=int, default=32, help="CPU estimate: answer tokens (default: 32)")
    parser.add_argument("--train-batch", type=int, default=8, help="GPU part: training batch (default: 8)")
    parser.add_argument("--steps", type=int, default=20, help="GPU part: measured steps per trainer (default: 20)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="GPU part: unmeasured first steps (default: 3)")
    parser.add_argument("--eval-samples", type=int, default=64, help="GPU part: evaluation samples (default: 64)")
    parser.add_argument("--eval-batch", type=int, default=16, help="GPU part: evaluation batch (default: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="GPU part: generated tokens (default: 32)")
    parser.add_argument("--score-samples", type=int, default=128, help="GPU part: scored samples (default: 128)")
    parser.add_argument("--peak-tflops", type=float, help="device bf16 peak for MFU (default: from the GPU's name)")
    parser.add_argument("--budget-s", type=float, default=420, help="GPU part: stop starting work after this (s)")
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/real_sizes.json; "
                        "--smoke: real_sizes_smoke.json in the temp folder)")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.smoke:
        args.sizes, args.steps, args.warmup_steps, args.train_batch = ["smoke"], 2, 1, 2
        args.eval_samples, args.eval_batch, args.max_new_tokens, args.score_samples = 4, 2, 4, 4
    args.device = torch.device("cuda" if args.gpu and not args.smoke else "cpu")
    if args.gpu and not args.smoke and not torch.cuda.is_available():
        parser.error("--gpu needs CUDA (no GPU here; --smoke runs the same code on CPU)")
    smoke_out = Path(tempfile.gettempdir()) / "real_sizes_smoke.json"  # smoke numbers are not results
    args.out = args.out or (smoke_out if args.smoke else RESULTS / "real_sizes.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    start = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join(sys.argv[1:] if argv is None else argv),
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine(),
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "estimate_settings": {"batch_size": args.batch_size, "tokens_per_sample": args.tokens_per_sample,
                              "answer_tokens": args.answer_tokens, "dtype": "bf16", "lora": "LoraTrainConfig()"},
    }
    def save(gpu: dict | None = None) -> None:
        if gpu is not None:
            result["smoke" if args.smoke else "gpu"] = gpu
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # kB on Linux
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    result["cpu"] = cpu_part(args)
    result["gpu"] = {"not_run": "no GPU in this run: bash benchmarks/gpu.sh on a machine with one"}
    if not args.gpu and args.out.exists():  # a CPU-only run keeps a GPU part measured earlier
        previous = json.loads(args.out.read_text()).get("gpu", {})
        if "not_run" not in previous:
            result["gpu"] = previous
    save()
    if args.gpu or args.smoke:
        save(gpu_part(args, start + args.budget_s, save))
    print(f"wrote {args.out} in {result['seconds']} s (peak RSS {result['peak_rss_gb']} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
