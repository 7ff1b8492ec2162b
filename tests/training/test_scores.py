"""Student-side scores: deterministic under a seed, zero perturbation for n=0, finite grounding."""

from __future__ import annotations

import random

import numpy as np

from tutorloop.training.scores import (
    answer_perplexity,
    delete_words,
    image_grounding,
    perturbation_distance,
    sample_embeddings,
)
from tutorloop.training.student import load_student

from ..conftest import make_sample


def test_embeddings_shape_and_batch_independence(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    samples = tiny_data.samples[:3] + tiny_data.yes_no[:3]  # different lengths: padding in the batch
    batched = sample_embeddings(student, samples, tiny_data.root, batch_size=6)
    alone = sample_embeddings(student, samples, tiny_data.root, batch_size=1)
    assert batched.shape == (6, student.model.config.text_config.hidden_size) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    assert not np.allclose(batched[0], batched[3])


def test_perturbation_is_deterministic_under_a_seed(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    samples = tiny_data.yes_no[:6]
    first = perturbation_distance(student, samples, tiny_data.root, n_words=2, m=3, seed=5, batch_size=4)
    again = perturbation_distance(student, samples, tiny_data.root, n_words=2, m=3, seed=5, batch_size=4)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (6,) and (first > 0).all()
    # a sample's score does not depend on what else is in the batch (its perturbations are seeded by its id)
    reordered = perturbation_distance(student, samples[::-1], tiny_data.root, n_words=2, m=3, seed=5, batch_size=4)
    np.testing.assert_allclose(reordered[::-1], first, rtol=1e-4, atol=1e-5)
    other = perturbation_distance(student, samples, tiny_data.root, n_words=2, m=3, seed=6, batch_size=4)
    assert not np.array_equal(first, other)


def test_perturbation_is_zero_without_deleted_words(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    scores = perturbation_distance(student, tiny_data.samples[:4], tiny_data.root, n_words=0, m=3)
    assert scores.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_delete_words_keeps_one_word_and_is_seeded():
    assert delete_words("What colour is the shape?", 2, random.Random(1)).count(" ") == 2
    assert delete_words("red", 2, random.Random(1)) == "red"
    assert delete_words("a b c d", 0, random.Random(1)) == "a b c d"
    assert delete_words("a b c d e f", 3, random.Random(9)) == delete_words("a b c d e f", 3, random.Random(9))


def test_perplexity_and_grounding(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    samples = tiny_data.samples[:4] + [make_sample("t-0", None, "Is the shape red?", "no", "text")]
    with_image = answer_perplexity(student, samples, tiny_data.root, with_image=True, batch_size=2)
    without = answer_perplexity(student, samples, tiny_data.root, with_image=False, batch_size=2)
    assert np.isfinite(with_image).all() and (with_image >= 1).all()
    assert not np.allclose(with_image, without)
    grounding = image_grounding(student, samples, tiny_data.root, batch_size=3)
    assert grounding.shape == (5,) and np.isfinite(grounding).all() and (grounding > 0).all()
    np.testing.assert_allclose(grounding, without / with_image, rtol=1e-5)
    np.testing.assert_array_equal(grounding, image_grounding(student, samples, tiny_data.root, batch_size=3))


def test_trained_student_is_grounded_in_the_image(colour_llava, tiny_data):
    """After learning colours from images, the answer is far likelier with the image than without."""
    student = load_student(colour_llava, device="cpu")
    grounding = image_grounding(student, tiny_data.samples, tiny_data.root)
    assert np.median(grounding) > 1.5
    perplexity = answer_perplexity(student, tiny_data.samples, tiny_data.root)
    assert np.median(perplexity) < 2.0
