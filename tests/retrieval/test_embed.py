"""Embedding: the shipped MiniLM loads offline, vectors are normalised float32, names are portable."""

from __future__ import annotations

import numpy as np

from tutorloop.retrieval.embed import (
    DEFAULT_EMBEDDER,
    embed_texts,
    load_embedder,
    resolve_embedder_name,
    sample_text,
)
from tutorloop.retrieval.records import Sample


def test_vectors_are_normalised_float32(minilm):
    vectors = embed_texts(minilm, ["How many circles?", "What colour is the car?"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embed_texts(minilm, []).shape == (0, 384)


def test_similar_instructions_are_closer(minilm):
    a, b, c = embed_texts(minilm, ["Count the circles.", "How many circles are there?", "What is the weather?"])
    assert a @ b > a @ c


def test_embedder_is_loaded_once_and_named_portably(minilm, tmp_path):
    assert load_embedder() is minilm and load_embedder("all-MiniLM-L6-v2") is minilm
    assert resolve_embedder_name(None) == DEFAULT_EMBEDDER
    assert resolve_embedder_name(tmp_path) == str(tmp_path.resolve())


def test_sample_text_is_the_instruction():
    sample = Sample.model_validate({"id": "a", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}]})
    assert sample_text(sample) == "How many?"
    assert sample_text(sample, with_answer=True) == "How many? 3"
