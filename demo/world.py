"""The demo world: scenes of coloured shapes on a 64×64 canvas, and the skills that ask about them.

A scene is a handful of shapes (kind, colour, size, centre), drawn with PIL without anti-aliasing so a
test can read each shape's colour back at its centre. Every shape lies wholly inside one quadrant, so
"left/right" and "top/bottom" are never ambiguous.

A skill is one ``Skill`` spec: its name, its phrasings (templates over a few slots), a ``scene`` rule
saying how to draw a scene it can ask about, and ``ask(scene, rng)`` that picks the slot values and
computes the answer from the scene (or returns ``None`` when the scene does not fit). Adding a skill is
one entry in ``SKILLS``.

All texts come from one small vocabulary (``vocabulary_texts``): a student trained from scratch has no
language prior, so the tokenizer must see every word and the pre-training must use every word a
target asks with (see demo/targets.py).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from itertools import product
from string import Formatter

from PIL import Image, ImageDraw

# Bump when scenes, skills, phrasings or drawing change: cached students and worlds are keyed by it.
WORLD_VERSION = "2"  # 2: the corner_colour skill (a target only) joins the vocabulary

CANVAS = 64
BACKGROUND = (24, 24, 24)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 210),
}
KINDS = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
RADIUS = {"big": (9, 12), "small": (5, 6)}
SIZES = ("big", "small")
MAX_SHAPES = 4


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    x: int
    y: int
    r: int

    @property
    def side(self) -> str:
        return "left" if self.x < CANVAS // 2 else "right"

    @property
    def vpos(self) -> str:
        return "top" if self.y < CANVAS // 2 else "bottom"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]

    def to_dict(self) -> dict:
        return {"canvas": CANVAS, "shapes": [s.__dict__.copy() for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(tuple(Shape(**s) for s in data["shapes"]))

    def jittered(self, rng: random.Random) -> Scene:
        """The same scene with every shape moved by at most one pixel: a near-duplicate image."""
        moved = []
        for s in self.shapes:
            dx, dy = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
            x, y = s.x + dx, s.y + dy
            if not (_fits(s.r, x, y) and all(_apart(o, x, y, s.r) for o in self.shapes if o is not s)):
                x, y = s.x - dx, s.y - dy  # the other way stays inside: ranges are wider than 2 px
            moved.append(Shape(s.kind, s.colour, s.size, x, y, s.r))
        return Scene(tuple(moved))


# ---------------------------------------------------------------------------------------------------
# Scenes: sampling and drawing


@dataclass(frozen=True)
class SceneRule:
    """How to draw a scene a skill can ask about."""

    n_shapes: tuple[int, int] = (1, 1)
    split: str | None = None  # "x": first shape left, second right (or swapped); "y": top/bottom; "xy": one per quadrant
    one_big: bool = False  # exactly one big shape, the others small
    distinct: tuple[str, ...] = ()  # attributes ("colour", "kind") that differ between all shapes
    kinds: int | None = None  # exactly this many distinct kinds (comparisons need two)


def _ranges(r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centre coordinates keeping a shape of radius ``r`` inside one half (low, high), off the midline."""
    mid = CANVAS // 2
    return (r + 1, mid - r - 2), (mid + r + 1, CANVAS - r - 2)


def _fits(r: int, x: int, y: int) -> bool:
    return all(any(lo <= v <= hi for lo, hi in _ranges(r)) for v in (x, y))


def _apart(a: Shape, x: int, y: int, r: int) -> bool:
    """Bounding boxes at least 2 px apart: shapes never touch, and each pixel has one owner."""
    gap = a.r + r + 2
    return abs(a.x - x) >= gap or abs(a.y - y) >= gap


def _centre(rng: random.Random, r: int, side: str | None = None, vpos: str | None = None) -> tuple[int, int]:
    low, high = _ranges(r)
    xs = {"left": low, "right": high, None: rng.choice([low, high])}[side]
    ys = {"top": low, "bottom": high, None: rng.choice([low, high])}[vpos]
    return rng.randint(*xs), rng.randint(*ys)


def _attributes(rng: random.Random, rule: SceneRule, n: int) -> list[tuple[str, str, str]]:
    colours = rng.sample(list(COLOURS), n) if "colour" in rule.distinct else [rng.choice(list(COLOURS)) for _ in range(n)]
    if "kind" in rule.distinct:
        kinds = rng.sample(KINDS, n)
    elif rule.kinds:
        pool = rng.sample(KINDS, rule.kinds)
        kinds = pool + [rng.choice(pool) for _ in range(n - len(pool))]
        rng.shuffle(kinds)
    else:
        kinds = [rng.choice(KINDS) for _ in range(n)]
    if rule.one_big:
        sizes = ["small"] * n
        sizes[rng.randrange(n)] = "big"
    else:
        sizes = [rng.choice(SIZES) for _ in range(n)]
    return list(zip(kinds, colours, sizes, strict=True))


def sample_scene(rng: random.Random, rule: SceneRule) -> Scene:
    """A scene following ``rule``; shapes never overlap (rejection sampling, fresh attributes on failure)."""
    n = rng.randint(*rule.n_shapes)
    for _ in range(200):
        attrs = _attributes(rng, rule, n)
        placed: list[Shape] = []
        halves = _halves(rng, rule, n)
        for (kind, colour, size), (side, vpos) in zip(attrs, halves, strict=True):
            r = rng.randint(*RADIUS[size])
            for _ in range(40):
                x, y = _centre(rng, r, side, vpos)
                if all(_apart(o, x, y, r) for o in placed):
                    placed.append(Shape(kind, colour, size, x, y, r))
                    break
            else:
                break
        if len(placed) == n:
            return Scene(tuple(placed))
    raise RuntimeError(f"could not place {n} shapes for {rule}")


def _halves(rng: random.Random, rule: SceneRule, n: int) -> list[tuple[str | None, str | None]]:
    if rule.split == "x":
        sides = rng.sample(["left", "right"], 2)
        return [(sides[0], None), (sides[1], None)] + [(None, None)] * (n - 2)
    if rule.split == "y":
        vpos = rng.sample(["top", "bottom"], 2)
        return [(None, vpos[0]), (None, vpos[1])] + [(None, None)] * (n - 2)
    if rule.split == "xy":
        return rng.sample([(side, vpos) for side in ("left", "right") for vpos in ("top", "bottom")], n)
    return [(None, None)] * n


def draw(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (CANVAS, CANVAS), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for s in scene.shapes:
        fill = COLOURS[s.colour]
        box = (s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r)
        if s.kind == "circle":
            pen.ellipse(box, fill=fill)
        elif s.kind == "square":
            # A square of the same area feel as the circle: slightly smaller half-side.
            h = max(2, round(s.r * 0.85))
            pen.rectangle((s.x - h, s.y - h, s.x + h, s.y + h), fill=fill)
        else:  # triangle pointing up, filling the box (a thinner one would look small); centre inside
            pen.polygon([(s.x, s.y - s.r), (s.x - s.r, s.y + s.r), (s.x + s.r, s.y + s.r)], fill=fill)
    return image


def png_bytes(scene: Scene) -> bytes:
    buffer = BytesIO()
    draw(scene).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# Skills

Ask = tuple[dict[str, str], str]  # slot values, answer


@dataclass(frozen=True)
class Skill:
    name: str
    templates: tuple[str, ...]
    ask: Callable[[Scene, random.Random], Ask | None]
    scene: SceneRule = field(default_factory=SceneRule)
    answers: tuple[str, ...] = ()  # the answer space: wrong answers are drawn from it
    # The pool skills that teach this one, for a skill the pool never asks itself (in_pool=False): the
    # world's ground truth of what a failure on it needs (the oracle teacher and benchmarks read it).
    parts: tuple[str, ...] = ()
    in_pool: bool = True

    @property
    def taught_by(self) -> tuple[str, ...]:
        return self.parts or (self.name,)

    @property
    def source(self) -> str:
        return f"{self.name}-v1"

    def question(self, scene: Scene, rng: random.Random, templates: tuple[str, ...] | None = None):
        """``(question, answer, slots)`` for ``scene``, or ``None`` when this skill cannot ask about it."""
        asked = self.ask(scene, rng)
        if asked is None:
            return None
        slots, answer = asked
        pool = [t for t in (templates or self.templates) if _slot_names(t) <= set(slots)]
        template = rng.choice(pool)
        used = {k: v for k, v in slots.items() if k in _slot_names(template)}  # what the question says
        return template.format(**used), answer, used


def _slot_names(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name}


def _one(scene: Scene) -> Shape | None:
    return scene.shapes[0] if len(scene.shapes) == 1 else None


def _single(attribute: str) -> Callable[[Scene, random.Random], Ask | None]:
    def ask(scene: Scene, rng: random.Random) -> Ask | None:
        s = _one(scene)
        if s is None:
            return None
        slots = {"shape": s.kind, "colour": s.colour}
        return slots, str(getattr(s, attribute))

    return ask


def _ask_count(scene: Scene, rng: random.Random) -> Ask | None:
    return {}, str(len(scene.shapes))


def _ask_exist(scene: Scene, rng: random.Random) -> Ask | None:
    present = {(s.colour, s.kind) for s in scene.shapes}
    if len(scene.shapes) > 3:
        return None
    if rng.random() < 0.5:
        colour, kind = rng.choice(sorted(present))
    else:
        # An absent pair that shares one attribute with a present shape, so the answer needs both.
        near = [(c, k) for c, k in product(COLOURS, KINDS) if (c, k) not in present
                and any(c == pc or k == pk for pc, pk in present)]
        colour, kind = rng.choice(near)
    return {"colour": colour, "shape": kind}, "yes" if (colour, kind) in present else "no"


def _ask_compare(scene: Scene, rng: random.Random) -> Ask | None:
    kinds = sorted({s.kind for s in scene.shapes})
    if len(scene.shapes) < 2 or len(kinds) != 2:
        return None
    count = {k: sum(s.kind == k for s in scene.shapes) for k in kinds}
    if count[kinds[0]] == count[kinds[1]]:
        return None  # a tie makes "more" and "fewer" both false: ask about scenes with a clear answer
    a, b = rng.sample(kinds, 2)
    return {"shapes_a": PLURAL[a], "shapes_b": PLURAL[b]}, "yes" if count[a] > count[b] else "no"


def _two_split(scene: Scene, axis: str, distinct: str) -> tuple[Shape, Shape] | None:
    if len(scene.shapes) != 2:
        return None
    a, b = scene.shapes
    where = (lambda s: s.side) if axis == "x" else (lambda s: s.vpos)
    if where(a) == where(b) or getattr(a, distinct) == getattr(b, distinct):
        return None
    return a, b


def _by_place(axis: str, attribute: str) -> Callable[[Scene, random.Random], Ask | None]:
    """``what <attribute> is the shape on the <place>?`` over a two-shape scene split along ``axis``."""
    slot = "side" if axis == "x" else "vpos"

    def ask(scene: Scene, rng: random.Random) -> Ask | None:
        pair = _two_split(scene, axis, attribute)
        if pair is None:
            return None
        s = rng.choice(pair)
        return {slot: s.side if axis == "x" else s.vpos}, str(getattr(s, attribute))

    return ask


def _ask_corner_colour(scene: Scene, rng: random.Random) -> Ask | None:
    """The colour of the shape in one quadrant, over a scene with a shape in every quadrant: neither the
    side nor the half alone names it, so the answer needs both (what side_colour and vertical_colour teach)."""
    if len({(s.side, s.vpos) for s in scene.shapes}) != 4:
        return None
    s = rng.choice(scene.shapes)
    return {"side": s.side, "vpos": s.vpos}, s.colour


def _one_big(scene: Scene) -> bool:
    return len(scene.shapes) == 2 and sorted(s.size for s in scene.shapes) == ["big", "small"]


def _ask_size_colour(scene: Scene, rng: random.Random) -> Ask | None:
    if not _one_big(scene) or scene.shapes[0].colour == scene.shapes[1].colour:
        return None
    s = rng.choice(scene.shapes)
    return {"size": s.size}, s.colour


def _ask_colour_size(scene: Scene, rng: random.Random) -> Ask | None:
    if not _one_big(scene) or scene.shapes[0].colour == scene.shapes[1].colour:
        return None
    s = rng.choice(scene.shapes)
    return {"colour": s.colour}, s.size


def _ask_colour_check(scene: Scene, rng: random.Random) -> Ask | None:
    s = _one(scene)
    if s is None:
        return None
    colour = s.colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != s.colour])
    return {"shape": s.kind, "colour": colour}, "yes" if colour == s.colour else "no"


NUMBERS = ("1", "2", "3", "4")
SINGLE = SceneRule(n_shapes=(1, 1))
TWO_X = SceneRule(n_shapes=(2, 2), split="x", distinct=("colour",))
TWO_X_KINDS = SceneRule(n_shapes=(2, 2), split="x", distinct=("kind",))
TWO_Y = SceneRule(n_shapes=(2, 2), split="y", distinct=("colour",))
FOUR_QUADRANTS = SceneRule(n_shapes=(4, 4), split="xy", distinct=("colour",))
TWO_BIG = SceneRule(n_shapes=(2, 2), one_big=True, distinct=("colour",))

SKILL_LIST: tuple[Skill, ...] = (
    Skill("colour", (
        "what colour is the shape?",
        "what colour is the {shape}?",
        "which colour does the shape have?",
        "tell me the colour of the {shape}.",
        "name the colour of the shape.",
        "the {shape} is what colour?",
        "what is the colour of the shape in the picture?",
    ), _single("colour"), SINGLE, tuple(COLOURS)),
    Skill("shape", (
        "what shape is this?",
        "what shape is the {colour} one?",
        "which shape do you see?",
        "name the shape.",
        "what kind of shape is in the picture?",
        "tell me the shape in the image.",
        "the {colour} one is what shape?",
    ), _single("kind"), SINGLE, KINDS),
    Skill("size", (
        "is the {shape} big or small?",
        "is the shape small or big?",
        "is the {colour} shape big or small?",
        "what size is the shape, big or small?",
        "tell me the size of the {shape}, big or small.",
        "is the {colour} one small or big?",
    ), _single("size"), SINGLE, SIZES),
    Skill("side", (
        "is the {shape} on the left or the right?",
        "which side is the shape on?",
        "on which side is the {colour} {shape}?",
        "is the shape left or right?",
        "where is the {shape}, left or right?",
        "is the {colour} one on the right or the left?",
    ), _single("side"), SINGLE, ("left", "right")),
    Skill("vertical", (
        "is the {shape} at the top or the bottom?",
        "is the shape in the top or bottom half?",
        "where is the {colour} shape, top or bottom?",
        "which half is the shape in, top or bottom?",
        "is the {colour} {shape} at the bottom or the top?",
    ), _single("vpos"), SINGLE, ("top", "bottom")),
    Skill("count", (
        "how many shapes are there?",
        "how many shapes do you see?",
        "count the shapes.",
        "what is the number of shapes in the picture?",
        "how many shapes are in the image?",
    ), _ask_count, SceneRule(n_shapes=(1, MAX_SHAPES)), NUMBERS),
    Skill("exist", (
        "is there a {colour} {shape}?",
        "do you see a {colour} {shape}?",
        "is there a {colour} {shape} in the picture?",
        "can you find a {colour} {shape}?",
        "is a {colour} {shape} in the image?",
    ), _ask_exist, SceneRule(n_shapes=(1, 3)), ("yes", "no")),
    Skill("compare", (
        "are there more {shapes_a} than {shapes_b}?",
        "do you see more {shapes_a} than {shapes_b}?",
        "is the number of {shapes_a} bigger than the number of {shapes_b}?",
        "are there more {shapes_a} than {shapes_b} in the picture?",
    ), _ask_compare, SceneRule(n_shapes=(3, MAX_SHAPES), kinds=2), ("yes", "no")),
    Skill("colour_check", (
        "is the shape {colour}?",
        "is the {shape} {colour}?",
        "is this shape {colour}?",
        "is the colour of the shape {colour}?",
    ), _ask_colour_check, SINGLE, ("yes", "no")),
    Skill("side_colour", (
        "what colour is the shape on the {side}?",
        "what colour is the {side} shape?",
        "which colour does the shape on the {side} have?",
        "tell me the colour of the {side} shape.",
        "the shape on the {side} is what colour?",
    ), _by_place("x", "colour"), TWO_X, tuple(COLOURS)),
    Skill("side_shape", (
        "what shape is on the {side}?",
        "which shape is on the {side}?",
        "what kind of shape is on the {side}?",
        "name the shape on the {side}.",
    ), _by_place("x", "kind"), TWO_X_KINDS, KINDS),
    Skill("vertical_colour", (
        "what colour is the shape at the {vpos}?",
        "which colour does the {vpos} shape have?",
        "what colour is the {vpos} shape?",
        "tell me the colour of the shape at the {vpos}.",
    ), _by_place("y", "colour"), TWO_Y, tuple(COLOURS)),
    Skill("size_colour", (
        "what colour is the {size} shape?",
        "which colour does the {size} shape have?",
        "tell me the colour of the {size} shape.",
        "the {size} shape is what colour?",
    ), _ask_size_colour, TWO_BIG, tuple(COLOURS)),
    Skill("colour_size", (
        "is the {colour} shape big or small?",
        "what size is the {colour} shape, big or small?",
        "is the {colour} one small or big?",
    ), _ask_colour_size, TWO_BIG, SIZES),
    # Asked only by the corner-colour target, in words the pre-training already uses ("on the left",
    # "at the top"); the pool teaches its parts, never the whole.
    Skill("corner_colour", (
        "what colour is the shape on the {side} at the {vpos}?",
        "which colour does the shape at the {vpos} on the {side} have?",
        "tell me the colour of the shape at the {vpos} on the {side}.",
        "the shape on the {side} at the {vpos} is what colour?",
    ), _ask_corner_colour, FOUR_QUADRANTS, tuple(COLOURS), parts=("side_colour", "vertical_colour"),
        in_pool=False),
)
SKILLS: dict[str, Skill] = {s.name: s for s in SKILL_LIST}
# What a pool may ask (every skill but the target-only ones).
POOL_SKILLS = tuple(s.name for s in SKILL_LIST if s.in_pool)

# What the pre-trained student is taught; the other skills exist only in the pool (targets need them).
GENERIC_SKILLS = ("colour", "size", "side", "vertical", "count")

# Off-topic pool samples: text-only questions or questions that ignore the image. Their words are in the
# vocabulary too, so they are well-formed noise rather than unknown tokens.
OFF_TOPIC: tuple[tuple[str, str], ...] = (
    ("what is one plus two?", "3"),
    ("what number comes after 1?", "2"),
    ("what number comes before 4?", "3"),
    ("say the word yes.", "yes"),
    ("is the sky blue?", "yes"),
    ("is grass purple?", "no"),
    ("what colour is the sun?", "yellow"),
    ("what colour is grass?", "green"),
    ("name a shape with three sides.", "triangle"),
    ("how many sides does a square have?", "4"),
)


def slot_values() -> dict[str, tuple[str, ...]]:
    return {
        "shape": KINDS, "colour": tuple(COLOURS), "side": ("left", "right"), "vpos": ("top", "bottom"),
        "size": SIZES, "shapes_a": tuple(PLURAL.values()), "shapes_b": tuple(PLURAL.values()),
    }


def render_all(template: str) -> list[str]:
    """Every text a template can produce (the slots take all their values)."""
    names = sorted(_slot_names(template))
    values = slot_values()
    return [template.format(**dict(zip(names, combo, strict=True))) for combo in product(*(values[n] for n in names))]


def vocabulary_texts(extra_templates: tuple[str, ...] = ()) -> list[str]:
    """All texts the world can produce: every phrasing filled every way, every answer, off-topic texts.

    The student's tokenizer is trained on these, so no question or answer of the world is unknown to it.
    """
    texts: list[str] = []
    for template in [t for s in SKILL_LIST for t in s.templates] + list(extra_templates):
        texts.extend(render_all(template))
    texts.extend(a for s in SKILL_LIST for a in s.answers)
    texts.extend(t for pair in OFF_TOPIC for t in pair)
    return texts


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching every text ``template`` can produce (its slots over their values), whole."""
    values = slot_values()
    parts = []
    for literal, name, _, _ in Formatter().parse(template):
        parts.append(re.escape(literal))
        if name:
            parts.append("(?:" + "|".join(re.escape(v) for v in values[name]) + ")")
    return re.compile("".join(parts) + "$")


Phrasings = list[tuple[str, re.Pattern[str]]]  # (skill, pattern of one of its phrasings)
PHRASINGS: Phrasings = [(s.name, template_pattern(t)) for s in SKILL_LIST for t in s.templates]


def skill_of_question(question: str, phrasings: Phrasings = PHRASINGS) -> str | None:
    """The world skill whose phrasing ``question`` is (the world's ground truth, read back from the words);
    ``None`` for a question no skill asks, or one several skills ask alike (e.g. size and colour_size share
    "is the red shape big or small?"). demo.targets passes the targets' own phrasings too."""
    found = {name for name, pattern in phrasings if pattern.match(question.strip())}
    return found.pop() if len(found) == 1 else None


def words(text: str) -> set[str]:
    """The words of a text as the student's word-level tokenizer sees them (punctuation apart)."""
    cleaned = "".join(c if c.isalnum() else " " for c in text.lower())
    return set(cleaned.split())
