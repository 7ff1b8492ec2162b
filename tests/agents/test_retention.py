"""Known-skill replay judged by the untouched student's own loss, and a share that follows forgetting."""

from __future__ import annotations

import torch

from tutorloop.agents.records import RoundMetrics
from tutorloop.agents.retention import FORGET_TOLERANCE, MAX_SHARE, SHARE_STEP, known_by_loss, replay_share
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.lora import attach_lora
from tutorloop.training.student import build_inputs, items_from_samples, load_student, untouched


def _wrong(samples):
    return [s.model_copy(update={"id": f"wrong-{s.id}", "conversations": [
        s.conversations[0], s.conversations[1].model_copy(update={"value": "purple"})]}) for s in samples]


def test_a_sample_whose_reference_the_student_disputes_is_never_known(colour_llava, tiny_data):
    student = load_student(colour_llava)
    right = tiny_data.samples[:6]  # colour questions colour_llava was trained to answer
    mixed = [x for pair in zip(right, _wrong(right), strict=True) for x in pair]

    known = known_by_loss(student, mixed, tiny_data.root, 10, quantile=0.5, seed=0, batch_size=4)
    assert sorted(known.ids) == sorted(s.id for s in right), "exactly the half with the student's own answers"
    assert known.drawn == 12 and known.threshold > 0
    few = known_by_loss(student, mixed, tiny_data.root, 2, quantile=0.5, seed=0, batch_size=4)
    assert len(few.ids) == 2 and set(few.ids) <= {s.id for s in right}
    assert known_by_loss(student, mixed, tiny_data.root, 0, quantile=0.5, seed=0, batch_size=4).ids == []


def test_untouched_switches_the_adapter_off_without_a_second_model(colour_llava, tiny_data):
    student = load_student(colour_llava, is_trainable=True)
    base_logits = _logits(student, tiny_data)
    attach_lora(student, LoraTrainConfig(train_projector=True))
    with torch.no_grad():  # move every adapter weight so that the adapted model answers differently
        for name, param in student.model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(0.05)
    adapted = _logits(student, tiny_data)
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    with untouched(student) as base:
        assert base.model is student.model
        assert torch.allclose(_logits(base, tiny_data), base_logits, atol=1e-5), "LoRA and the projector copy off"
    assert torch.allclose(_logits(student, tiny_data), adapted), "the adapter is back on after the block"


def _logits(student, tiny_data) -> torch.Tensor:
    batch = build_inputs(student, items_from_samples(tiny_data.samples[:3], tiny_data.root, with_answer=False))
    student.model.eval()
    with torch.no_grad():
        return student.model(**batch).logits.float()


def _metrics(*generic: float) -> list[RoundMetrics]:
    return [RoundMetrics(round=n, generic_accuracy=g) for n, g in enumerate(generic)]


def test_the_share_grows_after_a_round_that_forgot_and_relaxes_back_to_the_base():
    assert replay_share(0.2, _metrics(0.8), None)[0] == 0.2, "round 1: the configured share"
    grown, why = replay_share(0.2, _metrics(0.8, 0.75), 0.2)  # 5 points forgotten
    assert abs(grown - (0.2 + SHARE_STEP * (5 - FORGET_TOLERANCE))) < 1e-9 and "5.0 points forgotten" in why
    assert replay_share(0.2, _metrics(0.8, 0.81), 0.3)[0] < 0.3, "a round that kept everything relaxes the share"
    assert replay_share(0.2, _metrics(0.8, 0.81), 0.2)[0] == 0.2, "never below the configured share"
    assert replay_share(0.2, _metrics(0.9, 0.1), 0.5)[0] == MAX_SHARE
    assert replay_share(0.2, [RoundMetrics(round=0), RoundMetrics(round=1)], 0.3)[0] == 0.3, "no generic split"
