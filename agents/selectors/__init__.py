"""Selectors by name: how a round's samples are chosen. The CLI's choices and the config's check come
from ``SELECTORS``; adding one is a module with a ``SELECTOR`` and a line here (docs/architecture.md)."""

from __future__ import annotations

from tutorloop.agents.selectors import failures, less, random_draw, rds, teacher
from tutorloop.agents.selectors.base import Choice, Planned, RoundContext, Selector

SELECTORS: dict[str, Selector] = {s.name: s for s in (teacher.SELECTOR, failures.SELECTOR, random_draw.SELECTOR,
                                                    rds.SELECTOR, less.SELECTOR)}


def get_selector(name: str) -> Selector:
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; known: {', '.join(SELECTORS)}")
    return SELECTORS[name]


__all__ = ["SELECTORS", "Choice", "Planned", "RoundContext", "Selector", "get_selector"]
