"""The round's operating point: after a round trains, choose how much of its change to keep.

Training moves the student from the round's start toward what the round's data asks; the further it goes, the
more the target gains and the more the student may forget elsewhere. The train node measures a few points on
that path — the trained change scaled by alpha (``training.lora.blend``), 0 being the start — each on the
target's val split and on the retention split (the generic split, else the pool probe, agents/probe.py), and
keeps the best target val accuracy whose forgetting stays within ``max_forgetting``. The start is always a
point, so a round never ends worse than it began; the whole front is written as the round's ``front.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from tutorloop.agents.records import OperatingPoint, RoundFront
from tutorloop.training.lora import blend, trainable_weights
from tutorloop.training.student import Student

# (target val accuracy, retention accuracy or None) of the student as it is
Measure = Callable[[Student], tuple[float, float | None]]


def make_point(alpha: float, val: float, retention: float | None, retention_before: float | None,
               max_forgetting: float | None) -> OperatingPoint:
    forgetting = None if retention is None or retention_before is None else 100 * (retention_before - retention)
    within = max_forgetting is None or forgetting is None or forgetting <= max_forgetting + 1e-9
    return OperatingPoint(alpha=alpha, val_accuracy=val, retention_accuracy=retention, forgetting=forgetting,
                          within_bound=within or alpha == 0)  # the start is always allowed: it is where we are


def choose_point(points: Sequence[OperatingPoint]) -> tuple[OperatingPoint, str]:
    """The highest target val accuracy among the points within the forgetting bound; ties go to less forgetting,
    then to the stronger change."""
    allowed = [p for p in points if p.within_bound]
    best = max(allowed, key=lambda p: (p.val_accuracy, -(p.forgetting or 0.0), p.alpha))
    why = f"alpha {best.alpha:g}: val {best.val_accuracy:.3f}"
    if best.forgetting is not None:
        why += f", forgetting {best.forgetting:+.1f} points"
    if len(allowed) < len(points):
        why += f"; {len(points) - len(allowed)} of {len(points)} points over the forgetting bound"
    if best.alpha == 0:
        why += "; no trained point beat the start: the round keeps the weights it started from"
    return best, why


def measure_front(student: Student, start: dict[str, torch.Tensor], *, number: int, alphas: Sequence[float],
                  measured_start: tuple[float, float | None], measure: Measure, retention_before: float | None,
                  max_forgetting: float | None, retention_split: str | None) -> RoundFront:
    """Measure the points ``alphas`` between ``start`` and the student's trained weights, keep the chosen one in
    the student (in place) and return the front. ``measured_start``: (val, retention) accuracy of the round's start,
    as the previous round's evaluation already measured it."""
    began = time.perf_counter()
    end = trainable_weights(student.model)
    points = [make_point(0.0, *measured_start, retention_before, max_forgetting)]
    if any(not torch.equal(start[name], end[name]) for name in start):  # else training kept its start
        for alpha in sorted({a for a in alphas if a > 0}):
            blend(student.model, start, end, alpha)
            val, retention = measure(student)
            points.append(make_point(alpha, val, retention, retention_before, max_forgetting))
    best, why = choose_point(points)
    blend(student.model, start, end, best.alpha)
    return RoundFront(round=number, retention_split=retention_split, max_forgetting=max_forgetting, points=points,
                      chosen=best.alpha, reason=why, seconds=round(time.perf_counter() - began, 3))
