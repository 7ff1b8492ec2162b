"""A second world, for checking that the loop's defaults transfer beyond the shapes world they were tuned on:
real handwritten digits, another student, a target asked in words the pool combines otherwise.

Images: scikit-learn's bundled copy of the UCI handwritten digits (1,797 scans, 8x8, 17 grey levels; no
download), drawn white on black at 32x32. The first 80 % of the scans feed the pool (and the student's
pre-training), the last 20 % the target and generic splits, so an evaluated scan was never trained on.

Skills: ``digit`` (read it: the student is pre-trained on it alone, and the generic split measures it),
``after`` / ``before`` (the number one more / one less), ``parity`` (even or odd) and ``over_four``
(yes/no). The pool asks all five, plus text-only arithmetic as off-topic noise and 5 % wrong answers.

Target ``next-digit``: the number after the digit, asked in phrasings no pool sample uses, built from the
pool's own words (the pool says "what number comes after this digit?", the target "name the number after
the digit shown."). What teaches it: the pool's ``after`` samples.

Student: the same tiny LLaVA builder as the demo's (training/tiny.py) at 32 px with 8 px patches (16 image
tokens), its tokenizer trained on this world's texts, fully pre-trained on ``digit`` for a few CPU minutes;
cached by a key of the world version and the settings, like demo/student.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from tutorloop.demo.build import WorldPaths
from tutorloop.retrieval.files import atomic_write_text

DIGITS_VERSION = "1"
SIZE = 32
POOL_SHARE = 0.8  # of the scans, in their bundled order: the rest are for evaluation only

PHRASINGS: dict[str, tuple[str, ...]] = {
    "digit": ("what digit is this?", "which number is written here?", "read the digit in the image.",
              "what number do you see?", "name the digit shown.", "what is the written number?"),
    "after": ("what number comes after this digit?", "what is this number plus one?", "add one to the digit shown.",
              "which number is one more than this digit?"),
    "before": ("what number comes before this digit?", "what is this number minus one?",
               "take one from the digit shown.", "which number is one less than this digit?"),
    "parity": ("is this digit even or odd?", "is the number odd or even?", "is the written number even or odd?"),
    "over_four": ("is this digit more than four?", "is the number bigger than four?",
                  "is the written digit bigger than four?"),
}
TARGET = "next-digit"
TARGET_PHRASINGS = ("name the number after the digit shown.", "what is the number after this digit?",
                    "which number comes one after the written digit?", "after the digit in the image comes what number?")
TARGET_SKILL = "after"
GENERIC = "digit"
OFF_TOPIC = (("what is two plus two?", "4"), ("what is one plus one?", "2"), ("is five more than four?", "yes"),
             ("what number comes after seven?", "8"), ("is two odd or even?", "even"), ("what is three minus one?", "2"))


def answer(skill: str, digit: int) -> str | None:
    """The answer of ``skill`` about ``digit`` (None where it has none: nothing comes after 9 in one digit)."""
    if skill == "digit":
        return str(digit)
    if skill == "after":
        return str(digit + 1) if digit < 9 else None
    if skill == "before":
        return str(digit - 1) if digit > 0 else None
    if skill == "parity":
        return "even" if digit % 2 == 0 else "odd"
    if skill == "over_four":
        return "yes" if digit > 4 else "no"
    raise ValueError(f"unknown digits skill {skill!r}")


ANSWERS = {skill: sorted({a for d in range(10) if (a := answer(skill, d)) is not None}) for skill in PHRASINGS}


def texts() -> list[str]:
    """Every text of the world (the student's tokenizer is trained on them)."""
    out = [t for ts in PHRASINGS.values() for t in ts] + list(TARGET_PHRASINGS)
    out += [a for answers in ANSWERS.values() for a in answers] + [t for pair in OFF_TOPIC for t in pair]
    return out


@functools.cache
def scans() -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 8, 8) in 0..16, labels (n,)) from scikit-learn's bundled file (read once)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


def scan_split() -> tuple[list[int], list[int]]:
    """(pool scans, held-out scans): the first POOL_SHARE of the bundled order, and the rest."""
    n = len(scans()[1])
    cut = int(POOL_SHARE * n)
    return list(range(cut)), list(range(cut, n))


def png(scan: np.ndarray) -> bytes:
    grey = np.clip(scan * (255 / 16), 0, 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize((SIZE, SIZE), Image.Resampling.NEAREST).convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class _Writer:
    """Writes one JSONL file of LLaVA records and the PNGs they point at (each scan once per file)."""

    folder: Path
    name: str

    def __post_init__(self) -> None:
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.written: set[int] = set()

    def add(self, scan_index: int | None, question: str, reply: str, source: str, images: np.ndarray,
            **extra: object) -> None:
        record: dict = {"id": f"{self.name}-{len(self.records):06d}"}
        if scan_index is None:
            record["conversations"] = [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]
        else:
            image = f"images/scan-{scan_index:04d}.png"
            if scan_index not in self.written:
                (self.folder / image).write_bytes(png(images[scan_index]))
                self.written.add(scan_index)
            record["image"] = image
            record["conversations"] = [{"from": "human", "value": f"<image>\n{question}"},
                                       {"from": "gpt", "value": reply}]
        record["source"] = source
        self.records.append({**record, **extra})

    def close(self) -> Path:
        path = self.folder / f"{self.name}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        return path


def _ask(writer: _Writer, rng: random.Random, skill: str, indices: list[int], images: np.ndarray,
         labels: np.ndarray, phrasings: tuple[str, ...], wrong: float = 0.0) -> None:
    while True:
        i = rng.choice(indices)
        reply = answer(skill, int(labels[i]))
        if reply is not None:
            break
    extra = {}
    if wrong and rng.random() < wrong:
        extra = {"noise": "wrong_answer", "true_answer": reply}
        reply = rng.choice([a for a in ANSWERS[skill] if a != reply])
    writer.add(i, rng.choice(phrasings), reply, f"{skill}-v1", images, **extra)


def write_split(folder: Path, name: str, skill: str, n: int, seed: int, indices: list[int],
                phrasings: tuple[str, ...] | None = None) -> Path:
    images, labels = scans()
    rng = random.Random(f"digits:{name}:{seed}")
    writer = _Writer(folder, name)
    for _ in range(n):
        _ask(writer, rng, skill, indices, images, labels, phrasings or PHRASINGS[skill])
    return writer.close()


def write_digits_pool(folder: Path, n: int, seed: int, *, skills: tuple[str, ...] = tuple(PHRASINGS),
                      wrong_answer: float = 0.05, off_topic: float = 0.05, name: str = "pool") -> Path:
    """``n`` samples: skills in equal shares (minus the off-topic ones), on the pool's scans only."""
    images, labels = scans()
    pool_scans, _ = scan_split()
    rng = random.Random(f"digits:{name}:{seed}")
    writer = _Writer(folder, name)
    n_off = round(off_topic * n)
    for k in range(n - n_off):
        _ask(writer, rng, skills[k % len(skills)], pool_scans, images, labels, PHRASINGS[skills[k % len(skills)]],
             wrong_answer)
    for _ in range(n_off):
        question, reply = rng.choice(OFF_TOPIC)
        writer.add(None, question, reply, "misc-v1", images)
    rng.shuffle(writer.records)
    for k, record in enumerate(writer.records):
        record["id"] = f"{name}-{k:06d}"
    return writer.close()


def build_digits_world(out_dir: Path | str, *, pool_size: int = 6000, seed: int = 0, n_val: int = 100,
                       n_test: int = 300, n_generic: int = 150, student_cache: Path | str | None = None,
                       with_student: bool = True, progress: bool = True) -> WorldPaths:
    """The digits world under ``out_dir`` (rebuilt when its settings changed) and its pre-trained student."""
    root = Path(out_dir)
    settings = {"version": DIGITS_VERSION, "pool_size": pool_size, "seed": seed, "n_val": n_val, "n_test": n_test,
                "n_generic": n_generic}
    manifest = root / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()) != settings:
        shutil.rmtree(root, ignore_errors=True)
        _, held = scan_split()
        val_scans, test_scans = held[: len(held) // 3], held[len(held) // 3:]
        write_digits_pool(root / "pool", pool_size, seed)
        target = root / "targets" / TARGET
        write_split(target, "val", TARGET_SKILL, n_val, seed, val_scans, TARGET_PHRASINGS)
        write_split(target, "test", TARGET_SKILL, n_test, seed, test_scans, TARGET_PHRASINGS)
        write_split(root / "generic", "generic", GENERIC, n_generic, seed, held)
        atomic_write_text(manifest, json.dumps(settings, indent=2) + "\n")  # last: a torn build rebuilds
    target = root / "targets" / TARGET
    student = build_digits_student(student_cache or root / "students", seed, progress=progress) if with_student else None
    return WorldPaths(root=root, pool=root / "pool" / "pool.jsonl", image_root=root / "pool",
                      targets={TARGET: (target / "val.jsonl", target / "test.jsonl")},
                      generic=root / "generic" / "generic.jsonl", student=student)


@dataclass(frozen=True)
class DigitsPretrain:
    n_train: int = 4000
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 16


def build_digits_student(cache_dir: Path | str, seed: int = 0, settings: DigitsPretrain = DigitsPretrain(),
                         progress: bool = True) -> Path:
    """A tiny LLaVA pre-trained on reading the digit (cached); ``skills.json`` holds its accuracy per skill."""
    from tutorloop.demo.student import one_torch_thread
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.configs import TrainConfig
    from tutorloop.training.lora import train_full
    from tutorloop.training.student import load_student
    from tutorloop.training.tiny import build_tiny_llava

    blob = json.dumps({"version": DIGITS_VERSION, "seed": seed, **settings.__dict__}, sort_keys=True)
    final = Path(cache_dir) / f"digits-student-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    if (final / "skills.json").is_file():
        return final
    work = final.with_name(f".build-{final.name}")
    started = time.perf_counter()
    with one_torch_thread():  # the same student on every run of a machine (demo/student.py)
        trained = work / "model" / "training.json"
        if not trained.is_file():  # a build that died after training (in the evaluation) keeps its model
            shutil.rmtree(work, ignore_errors=True)
            init = build_tiny_llava(work / "init", texts(), seed=seed, image_size=SIZE, patch_size=8)
            data = write_digits_pool(work / "pretrain", settings.n_train, seed + 1000, skills=(GENERIC,),
                                     wrong_answer=0, off_topic=0, name="pretrain")
            config = TrainConfig(lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size, seed=seed,
                                 warmup_ratio=0.05)
            train_full(load_student(init, device="cpu"), load_samples(data), data.parent, config, work / "model",
                       progress=progress)
        report = json.loads(trained.read_text())
        accuracy = measure_digits_skills(work / "model", work / "eval", seed)
    info = {"version": DIGITS_VERSION, "seed": seed, "settings": settings.__dict__, "accuracy": accuracy,
            "train": {k: report[k] for k in ("steps", "first_loss", "last_loss", "seconds")},
            "seconds_this_call": round(time.perf_counter() - started, 1)}
    (work / "model" / "skills.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    (work / "model").replace(final)
    shutil.rmtree(work)
    return final


def measure_digits_skills(model_dir: Path, work: Path, seed: int, n: int = 100) -> dict[str, float]:
    """Accuracy per skill and on the target, on the evaluation scans (``n`` questions each)."""
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.evaluate import evaluate
    from tutorloop.training.student import load_student

    _, held = scan_split()
    student = load_student(model_dir, device="cpu")
    accuracy = {}
    for name, skill, phrasings in [*((s, s, None) for s in PHRASINGS), (TARGET, TARGET_SKILL, TARGET_PHRASINGS)]:
        split = write_split(work, name, skill, n, seed + 7, held, phrasings)
        accuracy[name] = round(evaluate(student, load_samples(split), split.parent, progress=False).summary["accuracy"], 3)
    return accuracy
