"""The lab's length-matched random draw (lab/selectors.py): the same lengths as the reference, nothing drawn
twice, the nearest length when one runs out; registered for one block only."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.selectors import LENGTH_MATCHED, length_matched, match_lengths, registered  # noqa: E402


def test_each_wanted_length_gets_a_draw_of_that_length_or_the_nearest_left():
    lengths = {"a": 10, "b": 10, "c": 12, "d": 30, "e": 31}
    picked = match_lengths(lengths, [10, 10, 10, 31, 29], random.Random(0))
    assert len(picked) == len(set(picked)) == 5
    assert sorted(lengths[i] for i in picked[:2]) == [10, 10]
    assert picked[2] == "c", "10 ran out: the nearest length left is 12"
    assert [lengths[i] for i in picked[3:]] == [31, 30]


def test_draws_are_uniform_within_a_length_and_seeded():
    lengths = {f"s{i}": 5 for i in range(50)}
    assert match_lengths(lengths, [5] * 3, random.Random(1)) == match_lengths(lengths, [5] * 3, random.Random(1))
    firsts = {match_lengths(lengths, [5], random.Random(seed))[0] for seed in range(40)}
    assert len(firsts) > 20, "not the first id of the bucket every time"


def test_the_lab_selector_is_a_run_s_name_only_inside_its_block():
    from tutorloop.agents.selectors import SELECTORS

    with registered(length_matched([10, 20])):
        assert LENGTH_MATCHED in SELECTORS
    assert LENGTH_MATCHED not in SELECTORS
    with pytest.raises(RuntimeError), registered(length_matched([10])):
        raise RuntimeError("a failed run")
    assert LENGTH_MATCHED not in SELECTORS
