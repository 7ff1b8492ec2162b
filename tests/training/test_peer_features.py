"""The two peer selectors' representations, against their definitions, on a tiny real student:
RDS+ (position-weighted mean of the last hidden layer, unit norm) and LESS (per-sample LoRA gradients,
Adam-preconditioned for the pool, a seeded Rademacher projection, unit norm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tutorloop.training.configs import LessConfig
from tutorloop.training.gradients import (
    AdamMoments,
    adam_step,
    gradient_features,
    lora_parameters,
    rademacher_project,
    sample_gradients,
    warm_up,
)
from tutorloop.training.representations import hidden_state_vectors, position_weighted_mean
from tutorloop.training.student import build_inputs, items_from_samples, load_student


def test_position_weights_count_the_real_tokens_only():
    hidden = torch.arange(8, dtype=torch.float32).view(1, 4, 2).repeat(2, 1, 1)  # rows: (0,1) (2,3) (4,5) (6,7)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # the second row is left-padded
    pooled = position_weighted_mean(hidden, mask)
    first = (1 * hidden[0, 0] + 2 * hidden[0, 1] + 3 * hidden[0, 2] + 4 * hidden[0, 3]) / 10
    second = (1 * hidden[1, 2] + 2 * hidden[1, 3]) / 3
    assert torch.allclose(pooled, torch.stack([first, second]))


def test_rds_vectors_are_the_weighted_mean_of_the_last_layer(tiny_llava, tiny_data):
    student = load_student(tiny_llava)
    samples = tiny_data.samples[:3]
    vectors = hidden_state_vectors(student, samples, tiny_data.root, batch_size=2)
    assert vectors.shape == (3, student.model.config.text_config.hidden_size)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    batch = build_inputs(student, items_from_samples([samples[1]], tiny_data.root, with_answer=True))
    with torch.no_grad():
        hidden = student.model(**{k: v for k, v in batch.items() if k != "labels"},
                               output_hidden_states=True).hidden_states[-1][0]
    weights = torch.arange(1, hidden.shape[0] + 1, dtype=torch.float32)  # one sample: no padding
    by_hand = torch.nn.functional.normalize((hidden * weights[:, None]).sum(0) / weights.sum(), dim=0)
    assert np.allclose(vectors[1], by_hand.numpy(), atol=1e-4), "image tokens and the answer are included"


def test_adam_step_is_the_update_from_the_warm_up_moments():
    g = torch.tensor([[1.0, -2.0]])
    moments = AdamMoments(m=torch.tensor([0.5, 0.5]), v=torch.tensor([0.25, 1.0]))
    m = 0.9 * moments.m + 0.1 * g
    v = 0.999 * moments.v + 0.001 * g ** 2
    assert torch.allclose(adam_step(g, moments), m / torch.sqrt(v + 1e-8))


def test_the_projection_is_seeded_rademacher_and_never_whole_in_memory():
    rows = torch.eye(20000)[[0, 1, 19999]]  # unit rows read rows of R, across generated blocks
    projected = rademacher_project(rows, 64, seed=3)
    assert np.allclose(np.abs(projected), 1 / 8), "entries ±1/√dim"
    assert np.array_equal(projected, rademacher_project(rows, 64, seed=3))
    assert not np.array_equal(projected, rademacher_project(rows, 64, seed=4))
    assert 0.3 < (projected > 0).mean() < 0.7


@pytest.fixture(scope="module")
def warmed(tiny_llava, tiny_data):
    student = load_student(tiny_llava)
    config = LessConfig(dim=32, warmup_epochs=1, batch_size=4, seed=0)
    moments = warm_up(student, tiny_data.samples[:8], tiny_data.root, config)
    return student, config, moments


def test_warm_up_trains_lora_only_and_keeps_adams_moments(warmed):
    student, _, moments = warmed
    params = lora_parameters(student)
    assert params and all(p.requires_grad for p in params)
    trainable = [n for n, p in student.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)
    assert moments.m.shape == moments.v.shape == (sum(p.numel() for p in params),)
    assert moments.v.abs().sum() > 0, "the warm-up took steps"


def test_gradient_features_follow_the_definition(warmed, tiny_data):
    student, config, moments = warmed
    samples = tiny_data.samples[:3]
    grads = sample_gradients(student, samples, tiny_data.root)
    assert grads.shape == (3, moments.m.numel())
    student.model.zero_grad()
    from tutorloop.training.student import answer_nll

    answer_nll(student, build_inputs(student, items_from_samples(samples[2:3], tiny_data.root,
                                                                with_answer=True))).backward()
    by_hand = torch.cat([p.grad.flatten() for p in lora_parameters(student)])
    student.model.zero_grad()
    assert torch.allclose(grads[2], by_hand, atol=1e-6), "one sample's own gradient, not a batch's"

    plain = gradient_features(student, samples, tiny_data.root, config)
    expected = rademacher_project(grads, config.dim, config.seed)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(plain, expected, atol=1e-5)
    preconditioned = gradient_features(student, samples, tiny_data.root, config, moments=moments)
    assert np.allclose(np.linalg.norm(preconditioned, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(preconditioned, plain), "the pool's features are Adam steps, not gradients"
