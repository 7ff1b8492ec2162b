"""Will a student fit, and where does it go: memory estimates, free memory, attention implementation.

An estimate is made of four parts, each reported on its own so a refusal can say which one to shrink:

* **weights**: parameter count x bytes of the load dtype (bf16 on CUDA, fp32 on CPU). Before loading it
  comes from the checkpoint's safetensors headers (exact counts, nothing read but the JSON headers); for
  a model built from a config it is the model's own (meta-device) parameters.
* **trainable state**: every trainable parameter's weight copy, gradient and AdamW's two moments. PEFT
  keeps LoRA weights in fp32 when the base is bf16 (16 B per parameter); a fully trained projector
  (``modules_to_save``) is a second copy at the model's dtype (4 x its bytes).
* **activations**: what a LLaMA-style decoder layer keeps for backward per token — the normed inputs of
  the attention and MLP projections, q/k/v and the attention output, the four MLP intermediates:
  ``(6h + 2kv + 4i)`` values per token per layer (SDPA keeps no ``s x s`` score matrix). With gradient
  checkpointing only each layer's input (``h``) is kept, plus one layer's full set while it is recomputed.
  The LM head and the fp32 loss run on ``logit_tokens`` positions only (``answer_nll`` computes logits for
  the answer span). The frozen vision tower keeps nothing for backward under LoRA (no input of it needs a
  gradient), so it is not counted; full fine-tuning of a large model is not a product path.
* **margin**: 10% of the rest, for allocator fragmentation and temporaries.

It is an estimate, not a measurement: ``benchmarks/real_sizes.py`` sets it against the measured peak on a GPU.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

GIB = 1024**3
MARGIN = 0.10
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                           "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


class StudentDoesNotFit(MemoryError):
    """The estimated memory exceeds what the device has free (or the limit the caller set)."""


def gb(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# --- parameter counts ------------------------------------------------------------------------------


def checkpoint_parameters(folder: Path | str) -> int | None:
    """Parameters stored in a model folder's safetensors files, read from their JSON headers only (a 7B
    checkpoint's header is a few hundred kB); None when the folder has no safetensors weights."""
    files = [f for f in sorted(Path(folder).glob("*.safetensors")) if not f.name.startswith("adapter_")]
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for dim in entry["shape"]:
                    n *= dim
                total += n
    return total


def parameter_bytes(params: Iterable[torch.nn.Parameter], dtype: torch.dtype | None = None) -> int:
    """Bytes of ``params`` at their own dtype, or at ``dtype`` (works on meta-device parameters)."""
    size = dtype_bytes(dtype) if dtype is not None else None
    return sum(p.numel() * (size or p.element_size()) for p in params)


# --- the estimate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDims:
    """The language model's sizes that activations scale with."""

    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> TextDims:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = text.hidden_size
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        return cls(hidden=hidden, intermediate=getattr(text, "intermediate_size", 4 * hidden),
                   layers=text.num_hidden_layers, kv_dim=kv_heads * head_dim, vocab=text.vocab_size)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    trainable_state: int
    activations: int
    resident: int = 0  # bytes of the estimate already allocated (weights of a loaded model)

    @property
    def margin(self) -> int:
        return round(MARGIN * (self.weights + self.trainable_state + self.activations))

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.margin

    @property
    def still_needed(self) -> int:
        return self.total - self.resident

    def describe(self) -> str:
        return (f"{gb(self.total)} = weights {gb(self.weights)} + trainable state {gb(self.trainable_state)} "
                f"+ activations {gb(self.activations)} + margin {gb(self.margin)}")

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "trainable_state": self.trainable_state, "activations": self.activations,
                "margin": self.margin, "total": self.total}


def activation_bytes(dims: TextDims, tokens: int, logit_tokens: int, compute_dtype: torch.dtype, *,
                     checkpointing: bool = False, lora_dropout: bool = False) -> int:
    """Activations kept for backward for one micro-batch of ``tokens`` padded tokens (see the module doc)."""
    e = dtype_bytes(compute_dtype)
    h, i = dims.hidden, dims.intermediate
    per_token_layer = e * (6 * h + 2 * dims.kv_dim + 4 * i)
    if lora_dropout:  # the dropped copy of each LoRA input: six of width h, down_proj's of width i
        per_token_layer += e * (6 * h + i)
    if checkpointing:
        layers = tokens * dims.layers * h * e + tokens * per_token_layer
    else:
        layers = tokens * dims.layers * per_token_layer
    embeddings = 2 * tokens * h * e  # embedding output and final norm
    head = logit_tokens * dims.vocab * (e + 4 + 4)  # logits, their fp32 copy in the loss, its gradient
    return layers + embeddings + head


def trainable_state_bytes(model: torch.nn.Module) -> int:
    """Weight copy + gradient + two AdamW moments of every trainable parameter, at its own dtype."""
    return sum(4 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def estimate_training(model: torch.nn.Module, *, tokens: int, logit_tokens: int, compute_dtype: torch.dtype,
                      checkpointing: bool = False, lora_dropout: bool = False, loaded: bool = True,
                      weight_dtype: torch.dtype | None = None) -> MemoryEstimate:
    """Training memory of ``model`` as it is (LoRA attached or not) for micro-batches of ``tokens`` tokens.

    ``loaded``: the weights are already allocated (their bytes count as resident). Works on a meta-device
    model, where ``weight_dtype`` says the dtype the real weights would be loaded in.
    """
    frozen = [p for p in model.parameters() if not p.requires_grad]
    weights = parameter_bytes(frozen, weight_dtype)
    state = trainable_state_bytes(model)
    acts = activation_bytes(TextDims.from_config(model.config), tokens, logit_tokens, compute_dtype,
                            checkpointing=checkpointing, lora_dropout=lora_dropout)
    return MemoryEstimate(weights=weights, trainable_state=state, activations=acts,
                          resident=weights if loaded else 0)


def estimate_loading(n_params: int, dtype: torch.dtype) -> MemoryEstimate:
    """Memory to hold the weights for evaluation (activations of a forward pass are transient and small)."""
    return MemoryEstimate(weights=n_params * dtype_bytes(dtype), trainable_state=0, activations=0)


# --- free memory and the refusal ---------------------------------------------------------------------


def free_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on CUDA, the system's available RAM on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def ensure_fits(estimate: MemoryEstimate, device: torch.device | str, *, what: str, advice: str,
                limit_gb: float | None = None) -> None:
    """Raise ``StudentDoesNotFit`` with the numbers when ``estimate`` will not fit.

    With ``limit_gb`` the whole estimate is compared with that limit (a share of a GPU, a CPU cap);
    without it, what is not yet allocated is compared with the device's free memory.
    """
    device = torch.device(device)
    if limit_gb is not None:
        need, have, against = estimate.total, limit_gb * GIB, f"the limit of {limit_gb:g} GiB"
    else:
        need, have, against = estimate.still_needed, free_bytes(device), f"{gb(free_bytes(device))} free on {device}"
        have = float(have)
    if need <= have:
        log.info("%s: estimated %s (fits in %s)", what, estimate.describe(), against)
        return
    raise StudentDoesNotFit(
        f"{what} will not fit: it needs an estimated {estimate.describe()}"
        + (f" (of which {gb(estimate.resident)} already allocated)" if estimate.resident and limit_gb is None else "")
        + f", against {against}. {advice}"
    )


TRAINING_ADVICE = ("To fit: lower max_tokens_per_batch (or batch_size), set gradient_checkpointing: true, "
                   "train in bf16 (precision: bf16), lower the LoRA rank, or spread the model over more devices "
                   "(load_student(device_map='auto')).")
LOADING_ADVICE = ("To fit: load in bf16 (dtype=torch.bfloat16), use a device with more free memory, or spread the "
                  "model over devices and CPU RAM with device_map='auto'.")


# --- placement and attention -----------------------------------------------------------------------


def input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the device of the input embeddings (the first stage of a ``device_map`` split)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def load_with_attention(load: Callable[..., Any], source: str, attn_implementation: str | None, **kwargs: Any) -> Any:
    """``load(source, attn_implementation=..., **kwargs)``; when SDPA was asked for and the architecture (or one
    of its sub-models) has no SDPA path, load again with eager attention and say so."""
    if attn_implementation is None:
        return load(source, **kwargs)
    try:
        return load(source, attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError) as err:
        if attn_implementation != "sdpa" or "scaled_dot_product_attention" not in str(err):
            raise
        log.warning("%s: no SDPA attention for this architecture (%s); loading with eager attention",
                    source, str(err).splitlines()[0][:200])
        return load(source, attn_implementation="eager", **kwargs)
