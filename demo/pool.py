"""Writing demo data files: the task-agnostic pool (with the mess a real pool has) and clean sets.

Files are LLaVA JSONL with PNGs under ``images/`` next to them (the image root is the file's folder).
Each record keeps its scene (``scene``) and slot values (``slots``) as extra keys so tests can recompute
every answer; noisy pool records carry ``noise`` (``near_duplicate`` / ``wrong_answer`` /
``off_topic``) for benchmarks to count — the loop itself must never read it.

Same seed and arguments → byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from tqdm import tqdm

from tutorloop.demo.world import OFF_TOPIC, POOL_SKILLS, SKILLS, Scene, Skill, png_bytes, sample_scene
from tutorloop.retrieval.files import atomic_write_text

OFF_TOPIC_SOURCE = "misc-v1"


class NoiseConfig(BaseModel):
    """Shares of the pool that are mess rather than clean samples."""

    near_duplicate: float = Field(0.05, ge=0, le=0.5)
    wrong_answer: float = Field(0.05, ge=0, le=0.5)
    off_topic: float = Field(0.03, ge=0, le=0.5)


CLEAN = NoiseConfig(near_duplicate=0, wrong_answer=0, off_topic=0)


@dataclass
class _Draft:
    """A record before ids are assigned (ids follow the final, shuffled order)."""

    key: int
    skill: str | None
    question: str
    answer: str
    image: int | None  # index of the PNG
    scene: Scene | None
    slots: dict
    noise: str | None = None
    duplicate_of: int | None = None
    true_answer: str | None = None


class _Images:
    """Writes each scene's PNG once, numbered in creation order."""

    def __init__(self, folder: Path, prefix: str):
        self.folder, self.prefix, self.count = folder, prefix, 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, scene: Scene) -> int:
        index = self.count
        (self.folder / self.name(index)).write_bytes(png_bytes(scene))
        self.count += 1
        return index

    def name(self, index: int) -> str:
        return f"{self.prefix}{index:06d}.png"


def write_pool(
    out_dir: Path | str,
    n: int,
    seed: int,
    *,
    skills: Sequence[str] | None = None,
    noise: NoiseConfig | None = None,
    questions_per_image: int = 3,
    name: str = "pool",
    progress: bool = True,
    weights: Mapping[str, float] | None = None,
) -> Path:
    """Write ``out_dir/<name>.jsonl`` (+ ``images/``): ``n`` samples over ``skills`` (default: every pool skill).

    Skills get equal shares of the clean samples, or shares proportional to ``weights`` (1 where unnamed). Skills that draw the same kind of scene share images
    (up to ``questions_per_image`` questions per PNG), which keeps 100k-sample pools quick to write.
    """
    out_dir = Path(out_dir)
    noise = noise or NoiseConfig()
    names = list(skills or POOL_SKILLS)
    _check_skills(names)
    rng = random.Random(f"pool:{seed}")
    n_dup, n_off = round(n * noise.near_duplicate), round(n * noise.off_topic)
    n_clean = n - n_dup - n_off
    if n_clean < len(names):
        raise ValueError(f"n={n} leaves {n_clean} clean samples for {len(names)} skills")
    images = _Images(out_dir / "images", f"{name}-")
    bar = tqdm(total=n, desc=f"writing {name}", unit="sample", disable=not progress)
    drafts = _clean_drafts(_shares(names, n_clean, weights or {}), rng, images, questions_per_image, bar)
    drafts += _near_duplicates(drafts[:n_clean], n_dup, rng, images, bar)
    drafts += _off_topic(n_off, rng, images, len(drafts), bar)
    _corrupt_answers(drafts[:n_clean], round(n * noise.wrong_answer), rng)
    bar.close()
    rng.shuffle(drafts)
    path = out_dir / f"{name}.jsonl"
    _write_jsonl(path, drafts, id_prefix=name, images=images)
    return path


def write_clean(
    path: Path | str,
    skills: Sequence[str],
    n_per_skill: int,
    seed: int,
    *,
    templates: dict[str, tuple[str, ...]] | None = None,
    id_prefix: str | None = None,
    progress: bool = False,
) -> Path:
    """A clean evaluation file: ``n_per_skill`` samples per skill, one image each, no noise.

    ``templates`` overrides a skill's phrasings (targets ask with their own wording); ids are
    ``<id_prefix>-NNNNNN`` (default: the file's stem) and images ``images/<stem>-NNNNNN.png``.
    """
    path = Path(path)
    _check_skills(skills)
    rng = random.Random(f"clean:{id_prefix or path.stem}:{seed}")
    images = _Images(path.parent / "images", f"{path.stem}-")
    drafts: list[_Draft] = []
    for skill_name in tqdm(skills, desc=f"writing {path.name}", disable=not progress):
        skill = SKILLS[skill_name]
        for _ in range(n_per_skill):
            scene, (question, answer, slots) = _fitting_scene(skill, rng, (templates or {}).get(skill_name))
            drafts.append(_Draft(len(drafts), skill_name, question, answer, images.add(scene), scene, slots))
    _write_jsonl(path, drafts, id_prefix=id_prefix or path.stem, images=images)
    return path


def _check_skills(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(SKILLS))
    if unknown:
        raise ValueError(f"unknown skills {unknown}; known: {sorted(SKILLS)}")


def _fitting_scene(skill: Skill, rng: random.Random, templates: tuple[str, ...] | None = None):
    # A scene drawn by the skill's rule always fits it; the loop only guards against rule/ask mismatch.
    for _ in range(100):
        scene = sample_scene(rng, skill.scene)
        asked = skill.question(scene, rng, templates)
        if asked is not None:
            return scene, asked
    raise RuntimeError(f"skill {skill.name}: its scene rule never yields a scene it can ask about")


def _shares(names: list[str], n_clean: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Clean samples per skill: proportional to the weights, summing to ``n_clean`` (largest remainders)."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights name skills that are not written: {unknown}")
    w = [float(weights.get(s, 1.0)) for s in names]
    if min(w) <= 0:
        raise ValueError(f"skill weights must be positive: {dict(zip(names, w, strict=True))}")
    exact = [n_clean * x / sum(w) for x in w]
    shares = [int(e) for e in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (shares[i] - exact[i], i))
    for i in by_remainder[: n_clean - sum(shares)]:
        shares[i] += 1
    return dict(zip(names, shares, strict=True))


def _clean_drafts(remaining: dict[str, int], rng, images, questions_per_image, bar) -> list[_Draft]:
    names, n_clean = list(remaining), sum(remaining.values())
    drafts: list[_Draft] = []
    while len(drafts) < n_clean:
        open_skills = [s for s in names if remaining[s] > 0]
        main = rng.choices(open_skills, weights=[remaining[s] for s in open_skills])[0]
        scene, asked = _fitting_scene(SKILLS[main], rng)
        image = images.add(scene)
        # Other skills drawing the same kind of scene ask about this image too (one PNG, many samples).
        partners = [s for s in open_skills if s != main and SKILLS[s].scene == SKILLS[main].scene]
        rng.shuffle(partners)
        batch = [(main, asked)]
        for other in partners[: questions_per_image - 1]:
            other_asked = SKILLS[other].question(scene, rng)
            if other_asked is not None:
                batch.append((other, other_asked))
        for skill_name, (question, answer, slots) in batch:
            remaining[skill_name] -= 1
            drafts.append(_Draft(len(drafts), skill_name, question, answer, image, scene, slots))
        bar.update(len(batch))
    return drafts


def _near_duplicates(originals, n_dup, rng, images, bar) -> list[_Draft]:
    """Copies with a tiny variation: the same image re-asked in other words, or the scene moved by 1 px."""
    out: list[_Draft] = []
    for k in range(n_dup):
        orig = rng.choice(originals)
        key = len(originals) + k
        other_words = [q for q in (t.format(**orig.slots) for t in SKILLS[orig.skill].templates
                                   if _fits_slots(t, orig.slots)) if q != orig.question]
        if other_words and rng.random() < 0.5:
            question = rng.choice(other_words)
            out.append(_Draft(key, orig.skill, question, orig.answer, orig.image, orig.scene, dict(orig.slots),
                              noise="near_duplicate", duplicate_of=orig.key))
        else:
            scene = orig.scene.jittered(rng)
            out.append(_Draft(key, orig.skill, orig.question, orig.answer, images.add(scene), scene,
                              dict(orig.slots), noise="near_duplicate", duplicate_of=orig.key))
        bar.update(1)
    return out


def _fits_slots(template: str, slots: dict) -> bool:
    try:
        template.format(**slots)
    except KeyError:
        return False
    return True


def _off_topic(n_off, rng, images, first_key, bar) -> list[_Draft]:
    """Text-only questions, or questions that ignore the (existing) image they come with."""
    out: list[_Draft] = []
    for k in range(n_off):
        question, answer = rng.choice(OFF_TOPIC)
        image = rng.randrange(images.count) if images.count and rng.random() < 0.5 else None
        out.append(_Draft(first_key + k, None, question, answer, image, None, {}, noise="off_topic"))
        bar.update(1)
    return out


def _corrupt_answers(clean: list[_Draft], n_wrong: int, rng: random.Random) -> None:
    for draft in rng.sample(clean, n_wrong):
        wrong = [a for a in SKILLS[draft.skill].answers if a != draft.answer]
        draft.true_answer, draft.answer = draft.answer, rng.choice(wrong)
        draft.noise = "wrong_answer"


def _write_jsonl(path: Path, drafts: list[_Draft], *, id_prefix: str, images: _Images) -> None:
    ids = {d.key: f"{id_prefix}-{i:06d}" for i, d in enumerate(drafts)}
    atomic_write_text(path, "".join(json.dumps(_record(d, ids, images), ensure_ascii=False) + "\n" for d in drafts))


def _record(d: _Draft, ids: dict[int, str], images: _Images) -> dict:
    prompt = d.question if d.image is None else f"<image>\n{d.question}"
    record: dict = {"id": ids[d.key]}
    if d.image is not None:
        record["image"] = f"images/{images.name(d.image)}"
    record["conversations"] = [{"from": "human", "value": prompt}, {"from": "gpt", "value": d.answer}]
    record["source"] = SKILLS[d.skill].source if d.skill else OFF_TOPIC_SOURCE
    if d.scene is not None:
        record["scene"] = d.scene.to_dict()
        record["slots"] = d.slots
    if d.noise:
        record["noise"] = d.noise
    if d.duplicate_of is not None:
        record["duplicate_of"] = ids[d.duplicate_of]
    if d.true_answer is not None:
        record["true_answer"] = d.true_answer
    return record
