"""The support matrix: each architecture users fine-tune, as a tiny random model built from its own config,
processor and chat-template style (training/architectures.py), through the product's own code paths.

Every test is parametrised by architecture (the test id names it, so a failure says which one breaks):
prompts are the processor's own ``apply_chat_template`` (tokenized exactly as the processor tokenizes
it), generation and answer extraction go through ``training.evaluate``, LoRA lands on the language model
only with the projector trained by its real name and the vision tower untouched, an adapter reloads to
identical logits, the answer is attended causally (no label can see itself), the re-ranking scores run,
and multi-image samples work where the architecture takes several images.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lab.architectures import ARCHITECTURES, build
from tutorloop.retrieval.records import Sample
from tutorloop.training.anatomy import anatomy, vision_parameters
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.evaluate import evaluate
from tutorloop.training.lora import lora_targets, train_lora
from tutorloop.training.scores import answer_perplexity, image_grounding, perturbation_distance
from tutorloop.training.student import (
    IGNORE_INDEX,
    PromptItem,
    answer_end,
    build_inputs,
    build_prompt,
    has_chat_template,
    image_size,
    items_from_samples,
    load_student,
    stop_token_ids,
    takes_suffix,
)

from ..conftest import make_sample

NAMES = list(ARCHITECTURES)
# What transformers calls each part; the product resolves these from the model (training/anatomy.py).
PARTS = {
    "qwen2_vl": ("model.language_model", "model.visual", ("model.visual.merger",)),
    "qwen2_5_vl": ("model.language_model", "model.visual", ("model.visual.merger",)),
    "qwen3_vl": ("model.language_model", "model.visual",
                 ("model.visual.merger", "model.visual.deepstack_merger_list.0")),
    "llava": ("model.language_model", "model.vision_tower", ("model.multi_modal_projector",)),
    "llava_onevision": ("model.language_model", "model.vision_tower", ("model.multi_modal_projector",)),
    "idefics3": ("model.text_model", "model.vision_model", ("model.connector",)),
    "smolvlm": ("model.text_model", "model.vision_model", ("model.connector",)),
    "gemma3": ("model.language_model", "model.vision_tower", ("model.multi_modal_projector",)),
    "paligemma": ("model.language_model", "model.vision_tower", ("model.multi_modal_projector",)),
    "internvl": ("model.language_model", "model.vision_tower", ("model.multi_modal_projector",)),
}
# The token each family's template closes an assistant turn with (LLaVA-1.5's closes with a space: EOS).
TURN_END = {"qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>", "qwen3_vl": "<|im_end|>", "llava": "</s>",
            "llava_onevision": "<|im_end|>", "idefics3": "<end_of_utterance>", "smolvlm": "<end_of_utterance>",
            "gemma3": "<end_of_turn>", "paligemma": "<eos>", "internvl": "<|im_end|>"}
LORA = {"epochs": 1, "batch_size": 4, "max_steps": 2, "lr": 5e-3, "dropout": 0.0, "seed": 0}


@pytest.fixture(scope="module", params=NAMES, ids=NAMES)
def arch(request):
    spec = ARCHITECTURES[request.param]
    if spec.unavailable:
        pytest.skip(f"{spec.title}: {spec.unavailable}")
    return spec


@pytest.fixture(scope="module")
def arch_dir(arch, tmp_path_factory, tiny_data):
    return build(arch.name, tmp_path_factory.mktemp(f"arch-{arch.name}"), tiny_data.texts, seed=0)


@pytest.fixture(scope="module")
def trained(arch_dir, tiny_data, tmp_path_factory):
    """One short LoRA round per architecture: (the trained student, its adapter folder, the report)."""
    student = load_student(arch_dir, device="cpu")
    out = tmp_path_factory.mktemp("adapter")
    report = train_lora(student, tiny_data.samples[:8], tiny_data.root, LoraTrainConfig(**LORA), out, progress=False)
    return student, out, report


def _image(colour=(220, 40, 40)) -> Image.Image:
    return Image.new("RGB", (32, 32), colour)


def test_prompt_is_the_processors_own_chat_template(arch, arch_dir):
    student = load_student(arch_dir, device="cpu")
    processor = student.processor
    question = "What colour is the shape?"
    ours = build_inputs(student, [PromptItem([_image()], question)])
    if takes_suffix(processor):  # PaliGemma: no chat template; the processor lays out <image>...<bos>prompt\n
        assert not has_chat_template(processor)
        ids = ours["input_ids"][0].tolist()
        n_image = ids.count(processor.image_token_id)
        assert n_image == processor.image_seq_length and ids[n_image] == student.tokenizer.bos_token_id
        assert not ours["token_type_ids"].any()  # the whole prompt is prefix
        return
    conversation = [{"role": "user", "content": [{"type": "image", "image": _image()},
                                                 {"type": "text", "text": question}]}]
    assert build_prompt(processor, question) == processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False)
    theirs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()  # same tokens, one BOS, same image tokens
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"].to(ours["pixel_values"].dtype))


def test_answers_end_with_the_templates_end_of_turn(arch, arch_dir, tiny_data):
    student = load_student(arch_dir, device="cpu")
    assert answer_end(student.processor) == TURN_END[arch.name]
    end_id = student.tokenizer.convert_tokens_to_ids(TURN_END[arch.name])
    assert end_id in stop_token_ids(student)
    batch = build_inputs(student, items_from_samples(tiny_data.samples[:2], tiny_data.root, with_answer=True))
    for row, sample in enumerate(tiny_data.samples[:2]):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert kept[-1] == end_id
        assert student.tokenizer.decode(kept[:-1], skip_special_tokens=True).strip() == sample.reference


def test_evaluation_generates_and_extracts_answers(arch, arch_dir, tiny_data):
    student = load_student(arch_dir, device="cpu")
    samples = tiny_data.samples[:3] + [make_sample("text-only", None, "Is the shape red?", "yes", "text")]
    result = evaluate(student, samples, tiny_data.root, batch_size=4, max_new_tokens=4, progress=False)
    assert [r.id for r in result.records] == [s.id for s in samples] and result.summary["n"] == 4
    specials = {t for t in student.tokenizer.all_special_tokens if t}
    for record in result.records:
        assert isinstance(record.prediction, str)
        assert not any(t in (record.output or record.prediction) for t in specials)


def test_parts_are_resolved_from_the_model(arch, arch_dir):
    model = load_student(arch_dir, device="cpu").model
    parts = anatomy(model)
    assert (parts.language_model, parts.vision_tower, parts.projectors) == PARTS[arch.name]
    targets = lora_targets(model, parts.lora_target)
    assert targets and all(t.startswith(f"{parts.language_model}.") for t in targets)
    config = model.config.get_text_config()
    assert len(targets) == 7 * config.num_hidden_layers  # q k v o gate up down in every layer
    assert vision_parameters(model) and not [t for t in targets if t.startswith(f"{parts.vision_tower}.")]


def test_lora_on_the_language_model_only_and_the_projector_by_name(arch, trained):
    student, _, report = trained
    parts = anatomy(student.model)
    assert report.projector == parts.projector == PARTS[arch.name][2][0]
    named = dict(student.model.named_parameters())
    lora = [n for n in named if "lora_" in n]
    assert lora and all(f".{parts.language_model}." in n for n in lora), "LoRA outside the language model"
    prefix = f"base_model.model.{parts.vision_tower}."
    vision = set(vision_parameters(student.model))
    assert vision
    for name, param in named.items():
        plain = name.removeprefix("base_model.model.")
        if plain in vision or (name.startswith(prefix) and ".original_module." not in name
                               and ".modules_to_save." not in name):
            assert "lora_" not in name and not param.requires_grad, f"vision tower touched: {name}"
    for projector in parts.projectors:
        saved = [p for n, p in named.items() if n.startswith(f"base_model.model.{projector}.modules_to_save.")]
        assert saved and all(p.requires_grad for p in saved), f"projector {projector} not trained"
    moved = [n for n, p in named.items() if "lora_B" in n and p.abs().sum() > 0]
    assert moved, "no LoRA weight moved in two steps"
    assert report.steps == 2 and all(math.isfinite(x) for x in report.losses)


def test_adapter_save_and_reload_gives_identical_logits(arch, arch_dir, trained, tiny_data):
    student, adapter, _ = trained
    items = items_from_samples(tiny_data.samples[:3], tiny_data.root, with_answer=True)
    with torch.inference_mode():
        before = student.model(**build_inputs(student, items)).logits
        reloaded = load_student(arch_dir, adapter=adapter, device="cpu")
        after = reloaded.model(**build_inputs(reloaded, items)).logits
        plain = load_student(arch_dir, device="cpu")
        untrained = plain.model(**build_inputs(plain, items)).logits
    assert torch.equal(before, after)
    assert not torch.equal(before, untrained)


def test_the_answer_is_attended_causally(arch, arch_dir):
    """Changing the answer's last word must not change the logits before it: otherwise the loss can read
    the label it predicts (PaliGemma's prefix is bidirectional: its answer must go in as the suffix)."""
    student = load_student(arch_dir, device="cpu")
    image = _image()
    with torch.inference_mode():
        a = build_inputs(student, [PromptItem([image], "What colour is the shape?", "red square")])
        b = build_inputs(student, [PromptItem([image], "What colour is the shape?", "red circle")])
        assert a["input_ids"].shape == b["input_ids"].shape
        changed = int((a["input_ids"][0] != b["input_ids"][0]).nonzero()[0])
        la, lb = student.model(**a).logits, student.model(**b).logits
    torch.testing.assert_close(la[0, :changed], lb[0, :changed], rtol=0, atol=1e-5)


def test_scores_run(arch, arch_dir, tiny_data):
    student = load_student(arch_dir, device="cpu")
    samples = tiny_data.yes_no[:3] + [make_sample("text-only", None, "Is the shape red?", "yes", "text")]
    distance = perturbation_distance(student, samples, tiny_data.root, n_words=2, m=2, batch_size=4)
    perplexity = answer_perplexity(student, samples, tiny_data.root, batch_size=4)
    grounding = image_grounding(student, samples, tiny_data.root, batch_size=4)
    assert distance.shape == perplexity.shape == grounding.shape == (4,)
    assert np.isfinite(distance).all() and (distance[:3] > 0).all()
    assert np.isfinite(perplexity).all() and (perplexity > 1).all() and np.isfinite(grounding).all()


def test_multi_image_samples(arch, arch_dir, tiny_data):
    if not arch.multi_image:
        pytest.skip(f"{arch.title} takes one image per sample")
    student = load_student(arch_dir, device="cpu")
    two = [_image((220, 40, 40)), _image((40, 60, 220))]
    items = [PromptItem(two, "Which colour comes first?", "red"), PromptItem([two[0]], "What colour?", "red")]
    batch = build_inputs(student, items)
    prompt = build_prompt(student.processor, "Which colour comes first?", n_images=2)
    with torch.inference_mode():
        out = student.model(**batch)
        generated = student.model.generate(**build_inputs(student, [PromptItem(two, "Which colour comes first?")]),
                                           max_new_tokens=2, do_sample=False)
    assert torch.isfinite(out.loss) and generated.shape[0] == 1
    if has_chat_template(student.processor):  # two image placeholders in the rendered prompt
        one = build_prompt(student.processor, "Which colour comes first?", n_images=1)
        assert len(prompt) > len(one)
    sample = Sample.model_validate({
        "id": "two", "image": [tiny_data.samples[0].image, tiny_data.samples[4].image], "source": "multi",
        "conversations": [{"from": "human", "value": "<image>\n<image>\nWhich colour comes first?"},
                          {"from": "gpt", "value": "red"}]})
    record = evaluate(student, [sample], tiny_data.root, max_new_tokens=2, progress=False).records[0]
    assert record.images == sample.images


def test_qwen_pixel_budget_is_not_an_edge():
    """Qwen2-VL's size is a pixel budget (shortest_edge=3136 px, longest_edge ~1M px): the blank image of a
    text-only row is 56x56, not a million pixels on a side."""
    import transformers

    processor = type("P", (), {"image_processor": transformers.Qwen2VLImageProcessorPil()})()
    assert image_size(processor) == (56, 56)


def test_a_processor_without_its_video_half_keeps_its_class_and_settings(tmp_path, tiny_data):
    """Without torchvision the Qwen2-VL processor is loaded without its video processor; it is still a
    Qwen2VLProcessor with the saved image processor and chat template, and a folder it saves names the
    real class (training/processors.py)."""
    import json

    import transformers
    from transformers.utils import is_torchvision_available

    from tutorloop.training.processors import load_processor

    folder = build("qwen2_vl", tmp_path / "qwen", tiny_data.texts)
    processor = load_processor(folder)
    assert isinstance(processor, transformers.Qwen2VLProcessor) and has_chat_template(processor)
    assert processor.image_processor.patch_size == 8
    processor.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "processor_config.json").read_text())["processor_class"] == \
        "Qwen2VLProcessor"
    if not is_torchvision_available():
        with pytest.raises(ValueError, match="without its video processor"):
            processor.video_processor([])
