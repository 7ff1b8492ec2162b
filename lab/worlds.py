"""Fresh worlds drawn from a seed: what the benchmarks report on, so that no number comes from the world a
default was chosen on.

A seed draws, on the demo's shapes (demo/world.py): the scenes of the pool, the validation and the test
splits; the pool's mix (the share of each pool skill, near-duplicates, wrong answers, off-topic samples);
and two targets, each a skill the student was never trained on, asked in one of three ways — with the pool's
own phrasings (``plain``), with phrasings drawn here from a word bank of the student's own words
(``reworded``), or as a choice among the colours (``choice``, whose words lead a text search astray). The
composite ``corner_colour`` (the pool asks only its parts) is among the skills drawn.

The student is the demo's shipped one, pre-trained on the generic skills (a student per world would cost
15-50 CPU minutes each on a 2-core machine): what changes between worlds is everything it is adapted on and
measured with.

Seeds are split once: defaults may be chosen on ``TUNING_SEEDS`` only; benchmarks report on
``HELD_OUT_SEEDS``, which no default was picked on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from tutorloop.demo.build import WorldPaths
from tutorloop.demo.pool import NoiseConfig, write_clean, write_pool
from tutorloop.demo.world import COLOURS, GENERIC_SKILLS, POOL_SKILLS, SKILLS, vocabulary_texts, words

TUNING_SEEDS = (1, 2, 3)
HELD_OUT_SEEDS = (101, 102, 103)

TARGET_SKILLS = ("side_colour", "vertical_colour", "size_colour", "corner_colour")
KINDS = ("plain", "reworded", "choice")

# Where the asked-about shape is, per target skill: the slot phrase the frames below are filled with.
PLACES = {
    "side_colour": ("on the {side}", "on the {side} side"),
    "vertical_colour": ("at the {vpos}", "in the {vpos} half"),
    "size_colour": ("of {size} size",),
    "corner_colour": ("on the {side} at the {vpos}", "at the {vpos} on the {side}"),
}
# Colour questions about "the shape PLACE", in words the demo's student knows (checked when drawn).
FRAMES = (
    "what colour is the shape {place}?",
    "which colour is the shape {place}?",
    "the shape {place} has which colour?",
    "name the colour of the shape {place}.",
    "tell me the colour of the one {place}.",
    "what is the colour of the one {place}?",
    "which colour do you see {place}?",
    "the one {place} is what colour?",
    "what colour does the shape {place} have?",
)
CHOICE_FRAMES = ("is the shape {place} {choices}?", "which one is {place}, {choices}?",
                 "the one {place} is {choices}?", "is the one {place} {choices}?")


@dataclass(frozen=True)
class FreshTarget:
    name: str
    skill: str
    kind: str
    templates: tuple[str, ...]


@dataclass(frozen=True)
class FreshWorld:
    seed: int
    pool_size: int
    noise: NoiseConfig
    weights: dict[str, float]
    targets: tuple[FreshTarget, ...]

    @property
    def name(self) -> str:
        return f"fresh-{self.seed}"


def known_words() -> set[str]:
    return set().union(*(words(t) for t in vocabulary_texts()))


def draw_world(seed: int, pool_size: int = 3000) -> FreshWorld:
    """The world of ``seed``: its pool mix and two targets (distinct skills)."""
    rng = random.Random(f"fresh-world:{seed}")
    noise = NoiseConfig(near_duplicate=round(rng.uniform(0.0, 0.10), 3), wrong_answer=round(rng.uniform(0.0, 0.10), 3),
                        off_topic=round(rng.uniform(0.0, 0.08), 3))
    weights = {skill: round(rng.uniform(0.3, 2.0), 2) for skill in POOL_SKILLS}
    targets = tuple(_draw_target(rng, skill) for skill in rng.sample(TARGET_SKILLS, 2))
    return FreshWorld(seed, pool_size, noise, weights, targets)


def _draw_target(rng: random.Random, skill: str) -> FreshTarget:
    kind = rng.choice(KINDS)
    if kind == "plain":
        templates = SKILLS[skill].templates
    elif kind == "reworded":
        known, pool_own = known_words(), set(SKILLS[skill].templates)
        candidates = [f.format(place=p) for f in FRAMES for p in PLACES[skill]]
        fitting = [t for t in candidates if t not in pool_own and _words_of(t) <= known]
        templates = tuple(rng.sample(fitting, min(4, len(fitting))))
    else:
        colours = list(COLOURS)
        rng.shuffle(colours)
        choices = " or ".join(colours)
        templates = tuple(t for t in (f.format(place=p, choices=choices) for f in CHOICE_FRAMES for p in PLACES[skill][:1])
                          if _words_of(t) <= known_words())
    return FreshTarget(f"{skill.replace('_', '-')}-{kind}", skill, kind, templates)


def _words_of(template: str) -> set[str]:
    return words(re.sub(r"\{\w+\}", " ", template))  # the slots are filled with known words


def build_fresh_world(world: FreshWorld, out_dir: Path | str, student: Path, *, n_val: int = 100, n_test: int = 300,
                      n_generic_per_skill: int = 40) -> WorldPaths:
    """Write the world's pool, generic split and targets under ``out_dir`` (kept when already there)."""
    root = Path(out_dir)
    pool = root / "pool" / "pool.jsonl"
    if not pool.is_file():
        write_pool(pool.parent, world.pool_size, world.seed, noise=world.noise, weights=world.weights, progress=False)
    generic = root / "generic" / "generic.jsonl"
    if not generic.is_file():
        write_clean(generic, GENERIC_SKILLS, n_generic_per_skill, world.seed + 1)
    targets = {}
    for target in world.targets:
        folder = root / "targets" / target.name
        val, test = folder / "val.jsonl", folder / "test.jsonl"
        for path, n in ((val, n_val), (test, n_test)):
            if not path.is_file():
                write_clean(path, (target.skill,), n, world.seed + 2, templates={target.skill: target.templates},
                            id_prefix=f"{target.name}-{path.stem}")
        targets[target.name] = (val, test)
    return WorldPaths(root=root, pool=pool, image_root=pool.parent, targets=targets, generic=generic, student=student)
