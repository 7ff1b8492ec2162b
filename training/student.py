"""Load any Hugging Face image-text-to-text model as the student, and turn samples into model inputs.

``load_student`` takes a local folder (or a hub id, for real users; tests never download) through
``AutoModelForImageTextToText`` + ``AutoProcessor``, optionally with a PEFT adapter on top. bf16 on
CUDA, fp32 on CPU.

Prompts use the processor's chat template when it has one, else ``<image>\\n{question}``. The question
is the sample's last human turn (the one the reference answers); earlier turns of a multi-turn sample
are not replayed into the prompt.

Text-only samples (``image`` is None) get a blank mid-grey image of the processor's size and keep the
image placeholder in the prompt. Why: every row of a batch then has the same layout, which is what the
processors of LLaVA and Idefics3 need to batch mixed samples, and a grey square carries no content.
The one place a true text-only forward is wanted — perplexity *without* the image for the grounding
score — calls ``build_inputs(..., with_image=False)``, which drops both the placeholder and the pixels.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, BatchFeature

from tutorloop.retrieval.images import open_image
from tutorloop.retrieval.records import Sample
from tutorloop.training.processors import load_processor

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
PLAIN_IMAGE_TOKEN = "<image>"


@dataclass
class Student:
    model: Any  # a transformers PreTrainedModel, or a peft PeftModel wrapping one
    processor: Any
    device: torch.device
    name: str
    adapter: Path | None = None

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")


@dataclass(frozen=True)
class PromptItem:
    """One row of a batch: its images (empty = text-only), the user's question and, for training, the answer."""

    images: list[Image.Image]
    question: str
    answer: str | None = None


@contextmanager
def quiet_peft():
    """PEFT 0.21 reads a property transformers 5 deprecated; the FutureWarning is theirs, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_student(
    path: Path | str,
    adapter: Path | str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    is_trainable: bool = False,
    attn_implementation: str | None = "sdpa",
    device_map: str | dict | None = None,
    memory_limit_gb: float | None = None,
) -> Student:
    """The student model + processor from ``path``; ``adapter`` is a PEFT adapter folder to put on top.

    ``attn_implementation``: SDPA by default, eager (with a log line) for an architecture without it.
    ``device_map`` (``"auto"``, a dict): split the model over devices with accelerate instead of moving it
    to ``device``; inputs then go to the input embeddings' device. Before loading, the weights' size (from
    the safetensors headers) is checked against the device's free memory or ``memory_limit_gb``, and a
    student that will not fit is refused with the numbers (``training.placement.StudentDoesNotFit``).
    """
    from tutorloop.training.placement import (
        LOADING_ADVICE,
        checkpoint_parameters,
        ensure_fits,
        estimate_loading,
        input_device,
        load_with_attention,
    )

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = str(path)
    if not Path(source).exists() and Path(source).is_absolute():
        raise FileNotFoundError(f"student model folder not found: {source}")
    n_params = checkpoint_parameters(source) if Path(source).is_dir() else None
    if n_params is not None and (device_map is None or memory_limit_gb is not None):
        ensure_fits(estimate_loading(n_params, dtype), device, what=f"student {source} ({n_params:,} parameters, "
                    f"{dtype})", advice=LOADING_ADVICE, limit_gb=memory_limit_gb)
    placement = {"device_map": device_map} if device_map is not None else {}
    model = load_with_attention(AutoModelForImageTextToText.from_pretrained, source, attn_implementation,
                                dtype=dtype, **placement)
    processor = load_processor(source)  # without its video half where torchvision is missing
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:  # many chat models ship without one; generation needs it for batches
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation appends on the right
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no PEFT adapter (adapter_config.json) in {adapter}")
        with quiet_peft():
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    if device_map is None:
        model.to(device)
    else:
        device = input_device(model)
    model.train(is_trainable)
    return Student(model=model, processor=processor, device=device, name=source,
                   adapter=Path(adapter) if adapter is not None else None)


# --- prompts and images ----------------------------------------------------------------------------


def image_token(processor: Any) -> str:
    return getattr(processor, "image_token", None) or PLAIN_IMAGE_TOKEN


def has_chat_template(processor: Any) -> bool:
    return bool(getattr(processor, "chat_template", None))


def build_prompt(processor: Any, question: str, *, with_image: bool = True, n_images: int = 1) -> str:
    """The generation prompt for one question (``n_images`` image placeholders first when ``with_image``)."""
    n = n_images if with_image else 0
    if has_chat_template(processor):
        content: list[dict] = [{"type": "image"} for _ in range(n)]
        content.append({"type": "text", "text": question})
        return processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    return "".join(f"{image_token(processor)}\n" for _ in range(n)) + question


ANSWER_MARK = "ANSWERMARK"  # stands in for an answer when reading the template's end-of-turn


def turn_end(processor: Any) -> str | None:
    """The special token the chat template writes after an assistant message (``<|im_end|>``,
    ``<end_of_turn>``, ``<end_of_utterance>``, ``</s>``); None without a template or when it writes none
    (LLaVA-1.5's ends with a space: the tokenizer's EOS ends the answer there)."""
    if not has_chat_template(processor):
        return None
    conversation = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": ANSWER_MARK}]}]
    text = processor.apply_chat_template(conversation, tokenize=False)
    after = text.split(ANSWER_MARK, 1)[1] if ANSWER_MARK in text else ""
    tokenizer = getattr(processor, "tokenizer", processor)
    specials = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()
                                                    if t.special}
    found = [(after.find(t), t) for t in specials if t and t in after]
    return min(found)[1] if found else None


def answer_end(processor: Any) -> str:
    """What follows an answer in training: the template's end-of-turn token, else the tokenizer's EOS."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return turn_end(processor) or tokenizer.eos_token or ""


def stop_token_ids(student: Student) -> list[int]:
    """Token ids that end a generated answer: the tokenizer's EOS, the template's end-of-turn token and the
    model's own generation-config EOS ids (Gemma 3 ends a turn with <end_of_turn>, not <eos>)."""
    tokenizer = student.tokenizer
    ids = [tokenizer.eos_token_id]
    if (end := turn_end(student.processor)) is not None:
        ids.append(tokenizer.convert_tokens_to_ids(end))
    configured = getattr(getattr(student.model, "generation_config", None), "eos_token_id", None)
    ids.extend(configured if isinstance(configured, list) else [configured])
    return list(dict.fromkeys(i for i in ids if i is not None))


def takes_suffix(processor: Any) -> bool:
    """A prefix-LM processor (PaliGemma) takes the answer as ``suffix``: prompt and image attend to each
    other both ways, the answer causally, which its ``token_type_ids`` tell the model."""
    import inspect

    return callable(processor) and "suffix" in inspect.signature(type(processor).__call__).parameters


def image_size(processor: Any) -> tuple[int, int]:
    """(width, height) the image processor works at; falls back to 224 when it does not say.

    Qwen2-VL-family processors (they have a ``merge_size``) give ``size`` as a pixel budget, not edges
    (``shortest_edge=3136`` = 56x56 px, ``longest_edge`` ~ 1M px): their edge is the square root of the
    smallest budget — a blank image of a million-pixel *edge* would not fit in memory.
    """
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None) or {}
    size = {k: v for k, v in dict(size).items() if v is not None}
    if size.get("height") and size.get("width"):
        return int(size["width"]), int(size["height"])
    if getattr(image_processor, "merge_size", None) and size.get("shortest_edge"):
        edge = math.isqrt(int(size["shortest_edge"]))
        return edge, edge
    edge = size.get("longest_edge") or size.get("shortest_edge") or 224
    return int(edge), int(edge)


def blank_image(processor: Any) -> Image.Image:
    return Image.new("RGB", image_size(processor), (128, 128, 128))


def load_images(sample: Sample, image_root: Path | None, processor: Any = None) -> list[Image.Image]:
    """The sample's images as RGB, in order (none for a text-only sample); an unreadable file becomes a
    blank image of the processor's size, with a warning, so the image tokens still match."""
    images, root = [], Path(image_root) if image_root is not None else Path(".")
    for ref in sample.images:  # a file under the root, or bytes in a table (retrieval/images.py)
        try:
            with open_image(root, ref) as img:
                images.append(img.convert("RGB"))
        except (OSError, ValueError) as err:
            log.warning("sample %s: image %s unreadable (%s); using a blank image", sample.id, ref, err)
            images.append(blank_image(processor) if processor is not None else Image.new("RGB", (224, 224)))
    return images


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices sorted by text length (stable): batches of similar length waste less compute on padding."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def items_from_samples(samples: list[Sample], image_root: Path | None, *, with_answer: bool) -> list[PromptItem]:
    return [PromptItem(load_images(s, image_root), s.question, s.reference if with_answer else None) for s in samples]


# --- batches ---------------------------------------------------------------------------------------


def build_inputs(student: Student, items: list[PromptItem], *, with_image: bool = True) -> BatchFeature:
    """Left-padded model inputs for a batch; with answers, ``labels`` mark only the answer tokens.

    The answer plus what ends it (the template's end-of-turn token, else EOS: ``answer_end``) is appended to
    the generation prompt; its token count ``k`` is measured alone and, because padding is on the left,
    the last ``k`` tokens of every row are the answer: everything else — padding, image tokens, the
    prompt — is ``-100``. A prompt from a template that writes the BOS itself (Gemma 3) is tokenized
    without adding another, as ``processor.apply_chat_template(..., tokenize=True)`` does.
    """
    processor, tokenizer = student.processor, student.tokenizer
    if takes_suffix(processor):
        return to_device(prefix_lm_inputs(student, items, with_image=with_image), student)
    texts, answer_lengths = [], []
    end = answer_end(processor) if any(item.answer is not None for item in items) else ""
    for item in items:
        prompt = build_prompt(processor, item.question, with_image=with_image, n_images=max(1, len(item.images)))
        if item.answer is not None:
            # a space after "assistant:", none after a template's "assistant\n" (the natural next token)
            gap = "" if prompt[-1:].isspace() else " "
            answer = f"{gap}{item.answer.strip()}{end}"
            answer_lengths.append(len(tokenizer(answer, add_special_tokens=False)["input_ids"]))
            prompt += answer
        texts.append(prompt)
    bos = tokenizer.bos_token
    special = {"add_special_tokens": False} if bos and texts and texts[0].startswith(bos) else {}
    if with_image:
        # One list per row (a text-only row gets one blank image): the form Idefics3/SmolVLM require and
        # LLaVA/Qwen2-VL accept; a multi-image row carries all of its images.
        images = [item.images or [blank_image(processor)] for item in items]
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True, **special)
    else:
        batch = processor(text=texts, return_tensors="pt", padding=True, **special)
    if answer_lengths:
        batch["labels"] = answer_labels(batch["input_ids"], batch["attention_mask"], answer_lengths)
    return to_device(batch, student)


def prefix_lm_inputs(student: Student, items: list[PromptItem], *, with_image: bool = True) -> BatchFeature:
    """PaliGemma's layout: ``<image>...<bos>question\n`` as the prefix and the answer (+ EOS) as the suffix,
    labelled by the processor and marked ``token_type_ids == 1`` so it is attended causally. Appending the
    answer to the prompt instead would put it in the bidirectional prefix: every answer token would see
    the ones after it, and the loss would teach nothing. Without the image (the grounding score) the
    tokenizer lays out the same text, since the processor refuses a call without images."""
    processor, tokenizer = student.processor, student.tokenizer
    answers = [item.answer.strip() for item in items] if items and items[0].answer is not None else None
    if with_image:
        texts = [image_token(processor) * max(1, len(item.images)) + item.question for item in items]
        images = [item.images or [blank_image(processor)] for item in items]
        batch = processor(text=texts, images=images, suffix=answers, return_tensors="pt", padding=True)
        if answers is not None:
            batch["labels"] = torch.as_tensor(batch["labels"])
        else:
            batch.pop("labels", None)
        return batch
    texts = [f"{tokenizer.bos_token or ''}{item.question}\n" for item in items]
    pairs = [f"{a}{tokenizer.eos_token}" for a in answers] if answers is not None else None
    batch = tokenizer(texts, pairs, return_tensors="pt", padding=True, return_token_type_ids=True,
                      add_special_tokens=False)
    if answers is not None:
        batch["labels"] = batch["input_ids"].masked_fill(batch["token_type_ids"] == 0, IGNORE_INDEX)
    return BatchFeature(dict(batch))


def answer_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_lengths: list[int]) -> torch.Tensor:
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    width = input_ids.shape[1]
    for row, k in enumerate(answer_lengths):
        k = min(k, int(attention_mask[row].sum()))
        labels[row, width - k:] = input_ids[row, width - k:]
    return labels


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the (base) model's forward can skip the LM head outside the last positions."""
    import inspect

    model = getattr(model, "module", model)  # inside a DistributedDataParallel wrapper (training.distributed)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def answer_span_logits(student: Student, batch: BatchFeature) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` over the answer span only: fp32 logits predicting each of the last ``w``
    positions (``w`` = the longest answer) and their labels (``IGNORE_INDEX`` outside a row's answer)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    width = int((labels != IGNORE_INDEX).sum(1).max())
    if accepts_logits_to_keep(student.model):
        logits = student.model(**inputs, logits_to_keep=width + 1, use_cache=False).logits
    else:
        logits = student.model(**inputs, use_cache=False).logits[:, -(width + 1):]
    targets = labels[:, -width:] if width else labels[:, :0]
    return logits[:, :-1].float(), targets


def answer_nll(student: Student, batch: BatchFeature, *, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of the labelled (answer) tokens, computing logits for the answer span only.

    With left padding every answer sits in the last ``w`` positions (``w`` = the longest answer), so the
    LM head runs on ``w + 1`` positions instead of the whole sequence: for a real model's 100k+ vocabulary
    this is most of the head's time and memory. ``reduction="mean"`` is the mean over all answer tokens
    of the batch (what ``model(labels=...).loss`` gives); ``"row"`` is one mean per row.
    """
    logits, targets = answer_span_logits(student, batch)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none",
    ).view(targets.shape)
    counts = (targets != IGNORE_INDEX).sum(1)
    if reduction == "row":
        return nll.sum(1) / counts.clamp(min=1)
    return nll.sum() / counts.sum().clamp(min=1)


def to_device(batch: BatchFeature, student: Student) -> BatchFeature:
    """Move to the student's device; floating tensors (pixels) take the model's dtype."""
    dtype = student.dtype
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(student.device)
            batch[key] = value.to(dtype) if value.is_floating_point() else value
    return batch


@contextmanager
def untouched(student: Student):
    """``student`` as it was before its adapter (PEFT's ``disable_adapter()``: LoRA layers and the adapter's
    fully trained modules switched off), without loading the base model a second time."""
    if not student.is_peft:
        yield student
        return
    with quiet_peft(), student.model.disable_adapter():
        yield student
