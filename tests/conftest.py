"""Project-wide test fixtures: tiny real vision–language students and a tiny image data set, built offline.

Everything is session-scoped and built once in a temporary folder: a dozen coloured-shape PNGs in the
LLaVA conversation format, a tiny LLaVA and a tiny Idefics3 (random weights, tokenizer trained on the
data's words), and a LLaVA pre-trained briefly on the colour question (for tests that need known answers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach the hub

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from tutorloop.retrieval.records import Sample  # noqa: E402

# The machine the suite runs on has 2 cores shared with other work; with OpenMP's spinning threads a second
# thread there made small matmuls ~10x slower than one. Override with TUTORLOOP_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("TUTORLOOP_TEST_THREADS", "1")))

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")
COLOUR_QUESTION = "What colour is the shape?"
WARMTH_QUESTION = "Is the colour warm or cool?"  # a new skill on top of colour (red/yellow warm)
# Small enough that a LoRA step takes tens of milliseconds on one core, big enough to learn colours.
TINY_KNOBS = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1, "hidden": 64,
              "layers": 2, "heads": 2}


@dataclass(frozen=True)
class TinyData:
    root: Path  # image root (the data files live here too)
    samples: list[Sample]  # colour questions, one per image
    yes_no: list[Sample]  # "Is the shape red?" questions on the same images
    texts: list[str]  # every text the students' tokenizers must know

    def write(self, name: str, samples: list[Sample]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(s.to_record()) + "\n" for s in samples))
        return path


def draw(colour: str, shape: str, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 245))
    box = (size // 8, size // 8, size - size // 8, size - size // 8)
    fill = COLOURS[colour]
    (ImageDraw.Draw(image).rectangle if shape == "square" else ImageDraw.Draw(image).ellipse)(box, fill=fill)
    return image


def make_sample(sample_id: str, image: str | None, question: str, answer: str, source: str) -> Sample:
    human = f"<image>\n{question}" if image else question
    return Sample.model_validate({"id": sample_id, "image": image, "source": source,
                                  "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    root = tmp_path_factory.mktemp("tiny-data")
    (root / "images").mkdir()
    samples, yes_no = [], []
    for i, (colour, shape) in enumerate((c, s) for s in SHAPES for c in COLOURS for _ in range(2)):
        name = f"images/{i:03d}.png"
        draw(colour, shape).save(root / name)
        samples.append(make_sample(f"colour-{i:03d}", name, COLOUR_QUESTION, colour, "colour"))
        asked = list(COLOURS)[i % len(COLOURS)]
        yes_no.append(make_sample(f"check-{i:03d}", name, f"Is the shape {asked}?",
                                  "yes" if asked == colour else "no", "colour_check"))
    texts = [COLOUR_QUESTION, *COLOURS, *SHAPES, "yes", "no", "What shape is it?",
             *(f"Is the shape {c}?" for c in COLOURS), "Which colour do you see in the picture?",
             WARMTH_QUESTION, "warm", "cool"]
    return TinyData(root=root, samples=samples, yes_no=yes_no, texts=texts)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory, tiny_data: TinyData) -> Path:
    from tutorloop.training.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), tiny_data.texts, seed=0, **TINY_KNOBS)


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory, tiny_data: TinyData) -> Path:
    from lab.architectures import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"), tiny_data.texts, seed=0, **TINY_KNOBS)


@pytest.fixture(scope="session", params=["llava", "idefics3"])
def tiny_student_dir(request: pytest.FixtureRequest) -> Path:
    """Each test using this runs once per architecture."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def colour_llava(tmp_path_factory: pytest.TempPathFactory, tiny_data: TinyData, tiny_llava: Path) -> Path:
    """The tiny LLaVA after a short full pre-training on the colour question: it answers every colour right."""
    from tutorloop.training.configs import TrainConfig
    from tutorloop.training.lora import train_full
    from tutorloop.training.student import load_student

    student = load_student(tiny_llava, device="cpu")
    out = tmp_path_factory.mktemp("colour-llava")
    train_full(student, tiny_data.samples, tiny_data.root, TrainConfig(lr=3e-3, epochs=30, batch_size=16, seed=0),
               out, progress=False)
    return out


@pytest.fixture
def hold_store():
    """``hold_store(store, seconds)``: another process opens the embedded store and holds it ``seconds``
    (then lets go); returns that process once it holds the store. Every holder is killed at the end."""
    import subprocess
    import sys

    holders = []

    def hold(store: Path, seconds: float) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", (
            "import pathlib, time; from tutorloop.retrieval.edge_index import EdgeIndex; "
            f"index = EdgeIndex(pathlib.Path({str(store)!r})); print('held', flush=True); "
            f"time.sleep({seconds}); index.close()")], stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
