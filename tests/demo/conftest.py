"""Shared fixtures and the answer oracle for the demo world's tests.

The oracle recomputes every answer from a record's stored scene and slots with its own code, not the
world's ``ask`` functions, so a bug in a skill shows up as a disagreement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorloop.demo.pool import write_pool

SINGULAR = {"circles": "circle", "squares": "square", "triangles": "triangle"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _oracle(record: dict) -> str:
    """The correct answer of a record, from its scene and slots alone."""
    shapes, slots = record["scene"]["shapes"], record["slots"]
    skill = record["source"].removesuffix("-v1")
    half = record["scene"]["canvas"] / 2
    side = lambda s: "left" if s["x"] < half else "right"  # noqa: E731
    vpos = lambda s: "top" if s["y"] < half else "bottom"  # noqa: E731

    def only(pred) -> dict:
        found = [s for s in shapes if pred(s)]
        assert len(found) == 1, f"{record['id']}: the question does not single out one shape"
        return found[0]

    if skill in {"colour", "shape", "size", "side", "vertical", "colour_check"}:
        assert len(shapes) == 1
        s = shapes[0]
        return {"colour": s["colour"], "shape": s["kind"], "size": s["size"], "side": side(s),
                "vertical": vpos(s), "colour_check": "yes" if s["colour"] == slots.get("colour") else "no"}[skill]
    if skill == "count":
        return str(len(shapes))
    if skill == "exist":
        hit = any(s["colour"] == slots["colour"] and s["kind"] == slots["shape"] for s in shapes)
        return "yes" if hit else "no"
    if skill == "compare":
        n = lambda plural: sum(s["kind"] == SINGULAR[plural] for s in shapes)  # noqa: E731
        return "yes" if n(slots["shapes_a"]) > n(slots["shapes_b"]) else "no"
    if skill == "side_colour":
        return only(lambda s: side(s) == slots["side"])["colour"]
    if skill == "side_shape":
        return only(lambda s: side(s) == slots["side"])["kind"]
    if skill == "vertical_colour":
        return only(lambda s: vpos(s) == slots["vpos"])["colour"]
    if skill == "size_colour":
        return only(lambda s: s["size"] == slots["size"])["colour"]
    if skill == "colour_size":
        return only(lambda s: s["colour"] == slots["colour"])["size"]
    if skill == "corner_colour":
        return only(lambda s: side(s) == slots["side"] and vpos(s) == slots["vpos"])["colour"]
    raise AssertionError(f"no oracle for skill {skill}")


@pytest.fixture(scope="session")
def small_pool(tmp_path_factory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool"), 2000, seed=7, progress=False)


@pytest.fixture(scope="session")
def oracle():
    return _oracle


@pytest.fixture(scope="session")
def read_jsonl():
    return _read_jsonl
