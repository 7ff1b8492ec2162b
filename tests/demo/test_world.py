"""Scenes and their drawings: what the image shows is what the scene says."""

from __future__ import annotations

import random

import pytest

from tutorloop.demo.world import (
    BACKGROUND,
    CANVAS,
    COLOURS,
    GENERIC_SKILLS,
    POOL_SKILLS,
    SKILL_LIST,
    SKILLS,
    Scene,
    draw,
    render_all,
    sample_scene,
    skill_of_question,
    vocabulary_texts,
    words,
)


def _scenes(n: int = 300) -> list[Scene]:
    rng = random.Random(0)
    return [sample_scene(rng, SKILL_LIST[i % len(SKILL_LIST)].scene) for i in range(n)]


def test_shapes_stay_inside_their_quadrant_and_apart():
    for scene in _scenes():
        for i, s in enumerate(scene.shapes):
            for centre in (s.x, s.y):  # the whole box inside one half of the canvas
                assert centre - s.r > 0 and centre + s.r < CANVAS - 1
                assert centre + s.r < CANVAS / 2 - 1 or centre - s.r > CANVAS / 2
            for o in scene.shapes[i + 1:]:  # boxes apart
                assert abs(s.x - o.x) > s.r + o.r or abs(s.y - o.y) > s.r + o.r


def test_drawing_shows_the_scene():
    for scene in _scenes():
        image = draw(scene)
        assert image.size == (CANVAS, CANVAS)
        pixels = image.load()
        for s in scene.shapes:
            assert pixels[s.x, s.y] == COLOURS[s.colour]  # each shape's colour at its centre
        # Nothing is drawn outside the shapes' boxes, and each shape's pixels stay on its side.
        for x in range(CANVAS):
            for y in range(CANVAS):
                owners = [s for s in scene.shapes if abs(x - s.x) <= s.r and abs(y - s.y) <= s.r]
                if not owners:
                    assert pixels[x, y] == BACKGROUND
                elif pixels[x, y] != BACKGROUND:
                    owner = owners[0]
                    assert pixels[x, y] == COLOURS[owner.colour]
                    assert (x < CANVAS / 2) == (owner.side == "left")
                    assert (y < CANVAS / 2) == (owner.vpos == "top")


def test_big_shapes_cover_more_pixels_than_small_ones():
    for scene in _scenes():
        image = draw(scene)
        for s in scene.shapes:
            box = image.crop((s.x - s.r, s.y - s.r, s.x + s.r + 1, s.y + s.r + 1))
            area = sum(1 for p in box.getdata() if p == COLOURS[s.colour])
            assert (area > 140) == (s.size == "big"), (s, area)


def test_scene_round_trips_through_dict_and_jitters_by_one_pixel():
    rng = random.Random(2)
    for scene in _scenes(100):
        assert Scene.from_dict(scene.to_dict()) == scene
        moved = scene.jittered(rng)
        for a, b in zip(scene.shapes, moved.shapes, strict=True):
            assert abs(a.x - b.x) + abs(a.y - b.y) == 1 and (a.side, a.vpos) == (b.side, b.vpos)


@pytest.mark.parametrize("skill", SKILL_LIST, ids=lambda s: s.name)
def test_every_skill_asks_about_its_own_scenes(skill):
    rng = random.Random(1)
    answers = set()
    for _ in range(200):
        scene = sample_scene(rng, skill.scene)
        asked = skill.question(scene, rng)
        if asked is None:
            continue
        question, answer, slots = asked
        assert answer in skill.answers
        for value in slots.values():
            assert value in question
        answers.add(answer)
    assert answers == set(skill.answers), "every answer of the skill's space occurs"


def test_skill_specs_are_small_and_varied():
    assert len(SKILLS) >= 8 and set(GENERIC_SKILLS) < set(SKILLS)
    for skill in SKILL_LIST:
        assert len(skill.templates) >= 3, skill.name
        assert len(set(skill.templates)) == len(skill.templates)


def test_vocabulary_covers_every_text_and_is_small():
    vocab = set().union(*(words(t) for t in vocabulary_texts()))
    for skill in SKILL_LIST:
        for template in skill.templates:
            for text in render_all(template):
                assert words(text) <= vocab
    assert len(vocab) < 120


def test_corner_colour_needs_both_the_side_and_the_half_and_the_pool_never_asks_it():
    rng = random.Random(3)
    skill = SKILLS["corner_colour"]
    for _ in range(50):
        scene = sample_scene(rng, skill.scene)
        question, answer, slots = skill.question(scene, rng)
        same_side = [s for s in scene.shapes if s.side == slots["side"]]
        same_half = [s for s in scene.shapes if s.vpos == slots["vpos"]]
        assert len(same_side) == 2 and len(same_half) == 2, "neither part alone names the shape"
        assert [s.colour for s in same_side if s in same_half] == [answer]
        assert skill_of_question(question) == "corner_colour"
    assert "corner_colour" not in POOL_SKILLS
    assert skill.taught_by == ("side_colour", "vertical_colour")
    assert SKILLS["side_colour"].taught_by == ("side_colour",)


def test_skill_of_question_reads_the_skill_back_or_says_it_cannot():
    rng = random.Random(4)
    for skill in SKILLS.values():
        scene = sample_scene(rng, skill.scene)
        asked = skill.question(scene, rng)
        if asked is not None and skill.name not in {"size", "colour_size"}:
            assert skill_of_question(asked[0]) == skill.name, asked[0]
    assert skill_of_question("is the red shape big or small?") is None, "size and colour_size ask it alike"
    assert skill_of_question("what is the meaning of life?") is None
