"""Replay of what the student knows: pool samples the untouched student already answers right."""

from __future__ import annotations

from agents.retrieve import known_replay
from training.student import load_student


def test_keeps_only_what_the_student_answers_right_in_order_up_to_n(colour_llava, tiny_data):
    student = load_student(colour_llava)
    right = tiny_data.samples[:6]  # colour questions colour_llava was trained to answer
    wrong = [s.model_copy(update={"id": f"wrong-{s.id}", "conversations": [
        s.conversations[0], s.conversations[1].model_copy(update={"value": "purple"})]}) for s in right[:3]]
    mixed = [right[0], wrong[0], right[1], wrong[1], right[2], wrong[2], *right[3:]]

    assert known_replay(student, mixed, tiny_data.root, 10) == [s.id for s in right]
    assert known_replay(student, mixed, tiny_data.root, 2) == [right[0].id, right[1].id]
    assert known_replay(student, mixed, tiny_data.root, 0) == []
    assert known_replay(student, wrong, tiny_data.root, 3) == [], "a disputed answer is never replayed"
