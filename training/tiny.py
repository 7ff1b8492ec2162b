"""The tiny random-initialised LLaVA the demo pre-trains into its student, built offline (tests use it too).

Each builder trains a word-level tokenizer on the given texts (so no word the student will ever see is
unknown to it), assembles an HF model + processor of a real architecture and saves them with
``save_pretrained``; ``AutoModelForImageTextToText`` / ``AutoProcessor`` reload them bit-identically,
so the rest of the project treats them exactly like a user's downloaded model.

Why word-level: a student trained from scratch has no language prior, so one token per word (lower
case, punctuation apart) is the easiest unit to learn, and a seen word can never become ``<unk>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

BOS, EOS, PAD, UNK, IMAGE = "<s>", "</s>", "<pad>", "<unk>", "<image>"

# A plain two-role template; `<image>` comes first in the user turn (LLaVA-style). Content may be a string
# or the list-of-parts form processors pass ({"type": "image"} / {"type": "text", "text": ...}).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ 'user: ' if message['role'] == 'user' else 'assistant: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '</s>' if message['role'] == 'assistant' else '' }}{{ '\\n' }}"
    "{%- endfor -%}"
    "{{ 'assistant:' if add_generation_prompt else '' }}"
)
TEMPLATE_WORDS = "user: assistant: answer: step 1 2 3 4 5 6 7 8 9 0 . , ? ! ( ) - ' \" ;"


def train_tokenizer(texts: Iterable[str], special: list[str]) -> PreTrainedTokenizerFast:
    """A lower-case word-level tokenizer over ``texts`` (punctuation split off), left padding."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    # WordPiece's decoder joins with spaces and `cleanup` removes the space before . , ? !
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordLevelTrainer(min_frequency=1, special_tokens=special)
    tok.train_from_iterator([*texts, TEMPLATE_WORDS], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    extra = [t for t in special if t not in (BOS, EOS, PAD, UNK)]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left",  # must be given here: setting it after construction is not saved
        extra_special_tokens={"image_token": IMAGE} if IMAGE in extra else None,
        additional_special_tokens=extra, model_max_length=2048,
    )


def llama_config(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2D position code for a ``grid`` x ``grid`` patch raster (row-major): the first half of
    each vector encodes the column, the second half the row, each as sines and cosines of geometric
    frequencies. Shape ``(grid * grid, dim)``; ``dim`` must be divisible by 4."""
    if dim % 4:
        raise ValueError(f"dim {dim} is not divisible by 4")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def code(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([code(cols), code(rows)], dim=1).float()


def save_model(model: torch.nn.Module, processor, out_dir: Path | str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.bos_token_id = processor.tokenizer.bos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava(
    out_dir: Path | str,
    texts: Iterable[str],
    *,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    position_init: str = "random",
) -> Path:
    """A ~3.2M-parameter LLaVA (SigLIP vision + Llama) with a tokenizer trained on ``texts``.

    ``position_init="sincos"`` starts the vision tower's (trainable) patch-position table at the 2D
    sine-cosine code of MAE / ViT instead of SigLIP's random normal one, so a patch's column and row are
    smooth features from the first step.
    """
    tokenizer = train_tokenizer(texts, [PAD, UNK, BOS, EOS, IMAGE])
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden, intermediate_size=4 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 32), image_size=image_size, patch_size=patch_size,
        vision_use_head=False,  # LLaVA reads patch features; the pooling head would be dead weight
    )
    n_image_tokens = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=llama_config(tokenizer, hidden, layers, heads),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), projector_hidden_act="gelu",
        # SigLIP has no CLS token: keep every patch, take the last layer, add no extra image tokens.
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_seq_length=n_image_tokens,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if position_init == "sincos":
        table = model.model.vision_tower.embeddings.position_embedding.weight
        with torch.no_grad():
            table.copy_(sincos_2d(image_size // patch_size, vision_hidden))
    elif position_init != "random":
        raise ValueError(f"position_init must be 'random' or 'sincos', not {position_init!r}")
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="full", num_additional_image_tokens=0, chat_template=CHAT_TEMPLATE,
    )
    return save_model(model, processor, out_dir)
