"""The demo's target tasks: skills the pre-trained student lacks, each with a validation and a test split.

A target is one ``Target`` spec: its skill(s) and, optionally, its own phrasings. The student is
pre-trained on ``GENERIC_SKILLS`` only, so every target skill is new to it; the pool teaches each one.
``vertical-colour-reworded`` asks with phrasings the pool never uses for that skill — but built only
from words the student has seen in pre-training (a tiny student has no language prior: unseen words
would be noise, not "different wording"). tests/demo checks that vocabulary rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tutorloop.demo.pool import write_clean
from tutorloop.demo.world import PHRASINGS, SKILLS, Phrasings, template_pattern
from tutorloop.demo.world import skill_of_question as skill_of_pool_question


@dataclass(frozen=True)
class Target:
    name: str
    skills: tuple[str, ...]
    description: str
    templates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # skill → phrasings; default: the pool's
    # Whether the student's tokenizer is trained on these phrasings too. Only the first reworded target's
    # are: its words were all known, but token ids follow word frequency, so adding a later target's
    # phrasings would change the tokenizer — and so the student — that one cache key names.
    in_tokenizer_corpus: bool = False

    def phrasings(self, skill: str) -> tuple[str, ...]:
        return self.templates.get(skill, SKILLS[skill].templates)


TARGET_LIST: tuple[Target, ...] = (
    Target(
        "side-colour",
        ("side_colour",),
        "two shapes, one on each side: name the colour of the one on the left or the right",
    ),
    Target(
        "size-colour",
        ("size_colour",),
        "a big and a small shape: name the colour of the big or the small one",
    ),
    Target(
        "vertical-colour-reworded",
        ("vertical_colour",),
        "two shapes, one in each half: the colour of the top or bottom one, asked in words the pool "
        "does not use for this skill",
        templates={"vertical_colour": (
            "the shape in the {vpos} half is what colour?",
            "name the colour of the shape in the {vpos} half.",
            "in the {vpos} half, which colour do you see?",
            "what is the colour of the {vpos} one?",
        )},
        in_tokenizer_corpus=True,
    ),
    Target(
        "corner-colour",
        ("corner_colour",),
        "a shape in each quadrant: the colour of the one on a side and in a half — a skill the pool never "
        "asks, whose parts (colour by side, colour by half) it does",
    ),
    # The two "-choice" targets ask for a colour as a choice among the colours. Those words lead a text
    # search to the side skill ("is the red one on the right or the left?"), which the student already has,
    # not to the colour-by-place samples it needs: the nearest ~1 % of a pool (the 50 nearest of 6,000, the
    # 20 of 2,000) is all side-v1 for every phrasing below (tests/demo/test_targets.py). So the failed
    # questions as queries find the wrong data until a budget reaches past that neighbourhood.
    Target(
        "side-colour-choice",
        ("side_colour",),
        "side-colour asked as a choice among the colours, in words that lead a text search to the side skill",
        templates={"side_colour": (
            "is the {side} one red or blue or green or yellow or purple?",
            "which one is on the {side}, red or blue or green or yellow or purple?",
            "is the one on the {side} red or blue or green or yellow or purple?",
            "the one on the {side} is red or blue or green or yellow or purple?",
        )},
    ),
    Target(
        "corner-colour-choice",
        ("corner_colour",),
        "corner-colour asked as a choice among the colours, in words that lead a text search to the side "
        "skill, not to the parts (colour by side, colour by half) it needs",
        templates={"corner_colour": (
            "is the one on the {side} at the {vpos} red or blue or green or yellow or purple?",
            "which one is at the {vpos} on the {side}, red or blue or green or yellow or purple?",
            "is the one at the {vpos} on the {side} red or blue or green or yellow or purple?",
            "the one on the {side} at the {vpos} is red or blue or green or yellow or purple?",
        )},
    ),
)
TARGETS: dict[str, Target] = {t.name: t for t in TARGET_LIST}


def write_target(
    name: str, out_dir: Path | str, seed: int, *, n_val: int = 200, n_test: int = 500
) -> tuple[Path, Path]:
    """Write ``out_dir/<name>/{val,test}.jsonl`` (+ ``images/``); ids are disjoint between the splits."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    target = TARGETS[name]
    folder = Path(out_dir) / name
    templates = {s: target.phrasings(s) for s in target.skills}
    paths = []
    for split, n in (("val", n_val), ("test", n_test)):
        per_skill = max(1, n // len(target.skills))
        paths.append(write_clean(folder / f"{split}.jsonl", target.skills, per_skill, seed,
                                 templates=templates, id_prefix=f"{name}-{split}"))
    return paths[0], paths[1]


def target_texts() -> list[str]:
    """The target phrasings the student's tokenizer is trained on (``Target.in_tokenizer_corpus``)."""
    return [t for target in TARGET_LIST if target.in_tokenizer_corpus
            for phrasings in target.templates.values() for t in phrasings]


TARGET_PHRASINGS: Phrasings = PHRASINGS + [
    (skill, template_pattern(t)) for target in TARGET_LIST for skill, ts in target.templates.items() for t in ts]


def skill_of_question(question: str) -> str | None:
    """``demo.world.skill_of_question`` that also reads every target's own phrasings back."""
    return skill_of_pool_question(question, TARGET_PHRASINGS)
