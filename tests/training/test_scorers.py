"""The scorers by name on tiny real students: each one's values and what they mean, and the cache (a second
ask runs no forward of the model: counted with a forward hook on the model itself)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tutorloop.training.scorers import SCORERS, ScoreCache, ScoreSettings, ScoringSession, adapter_key
from tutorloop.training.scores import (
    ANSWER_STATISTICS,
    answer_perplexity,
    answer_statistics,
    image_grounding,
    perturbation_distance,
)
from tutorloop.training.student import load_student

from ..conftest import make_sample


class ForwardCounter:
    """Counts forward calls of the model's top module (every batch of every pass is one)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _session(student, samples, root, cache=None, **settings):
    by_id = {s.id: s for s in samples}
    return ScoringSession(lambda: student, lambda ids: [by_id[i] for i in ids], root,
                          ScoreSettings(batch_size=4, **settings), cache or ScoreCache())


def test_every_scorer_matches_its_definition(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    samples = tiny_data.samples[:4] + tiny_data.yes_no[:3] + [make_sample("t-0", None, "Is the shape red?", "no", "t")]
    ids = [s.id for s in samples]
    session = _session(student, samples, tiny_data.root, seed=3, perturbation_words=2, perturbation_draws=2)
    scores = {name: session.score(name, ids) for name in SCORERS}
    assert all(v.shape == (len(samples),) and np.isfinite(v).all() for v in scores.values())
    np.testing.assert_allclose(scores["perplexity"], answer_perplexity(student, samples, tiny_data.root, batch_size=3),
                               rtol=1e-4)
    np.testing.assert_allclose(scores["image_grounding"], image_grounding(student, samples, tiny_data.root, batch_size=3),
                               rtol=1e-4)
    np.testing.assert_allclose(scores["perturbation"], perturbation_distance(
        student, samples, tiny_data.root, n_words=2, m=2, seed=3, batch_size=5), rtol=1e-4, atol=1e-6)
    vocab = student.model.get_output_embeddings().weight.shape[0]
    assert ((scores["el2n"] >= 0) & (scores["el2n"] <= math.sqrt(2) + 1e-6)).all()
    assert ((scores["answer_entropy"] >= 0) & (scores["answer_entropy"] <= math.log(vocab) + 1e-6)).all()
    # asked in another order, each sample keeps its score
    np.testing.assert_array_equal(session.score("el2n", ids[::-1]), scores["el2n"][::-1])


def test_answer_statistics_against_full_logits(tiny_llava, tiny_data):
    """NLL, EL2N and entropy from the answer-span logits equal those computed by hand from the full logits."""
    import torch

    from tutorloop.training.student import PromptItem, build_inputs, load_images

    student = load_student(tiny_llava, device="cpu")
    sample = tiny_data.samples[0]
    stats = answer_statistics(student, [sample], tiny_data.root)[0]
    batch = build_inputs(student, [PromptItem(load_images(sample, tiny_data.root), sample.question, sample.reference)])
    with torch.inference_mode():
        logits = student.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1].float()
    labels = batch["labels"][0, 1:]
    keep = labels != -100
    p = torch.softmax(logits[keep], -1)
    target = labels[keep]
    onehot = torch.nn.functional.one_hot(target, p.shape[-1]).float()
    expected = [float(-torch.log(p[torch.arange(len(target)), target]).mean()),
                float((p - onehot).norm(dim=-1).mean()),
                float(-(p * torch.log(p)).sum(-1).mean())]
    assert ANSWER_STATISTICS == ("nll", "el2n", "entropy")
    np.testing.assert_allclose(stats, expected, rtol=1e-4)


def test_difficulty_scores_tell_right_from_wrong_answers(colour_llava, tiny_llava, tiny_data):
    """The colour-trained student: a wrong reference answer is hard (perplexity, EL2N up); it is sure of
    its answers (entropy far below the untrained student's) and leans on the image for them."""
    student = load_student(colour_llava, device="cpu")
    right = tiny_data.samples[:8]
    colours = ["red", "blue", "green", "yellow"]
    wrong = [make_sample(f"w-{s.id}", s.images[0], s.question, colours[(colours.index(s.reference) + 1) % 4], "w")
             for s in right]
    session = _session(student, right + wrong, tiny_data.root)
    ids_right, ids_wrong = [s.id for s in right], [s.id for s in wrong]
    for name in ("perplexity", "el2n"):
        assert (session.score(name, ids_wrong) > session.score(name, ids_right)).all(), name
    untrained = _session(load_student(tiny_llava, device="cpu"), right, tiny_data.root)
    assert session.score("answer_entropy", ids_right).max() < untrained.score("answer_entropy", ids_right).min()
    assert np.median(session.score("image_grounding", ids_right)) > 1.5


def test_cached_scores_run_no_second_forward_and_depend_on_the_adapter(tiny_llava, tiny_data, tmp_path):
    from peft import LoraConfig, get_peft_model

    student = load_student(tiny_llava, device="cpu")
    samples = tiny_data.samples[:6]
    ids = [s.id for s in samples]
    cache = ScoreCache()
    session = _session(student, samples, tiny_data.root, cache=cache, perturbation_draws=1)
    counter = ForwardCounter(student.model)
    session.score("perplexity", ids)
    after_answer_pass = counter.calls
    assert after_answer_pass == 2  # 6 samples, batches of 4
    for name in ("el2n", "answer_entropy", "perplexity"):  # the same pass: nothing new to run
        session.score(name, ids[::-1])
    assert counter.calls == after_answer_pass
    session.score("image_grounding", ids)  # only the text-only pass is new
    assert counter.calls == after_answer_pass + 2
    session.score("perturbation", ids[:3])
    calls = counter.calls
    session.score("perturbation", ids[:3])
    session.score("image_grounding", ids[2:])
    assert counter.calls == calls and cache.forwarded == {"answer": 6, "answer_text_only": 6, "perturbation": 3}

    # a later session of the same round (same adapter, same cache) loads neither the student nor a sample
    def refuse():
        raise AssertionError("the student was loaded although every score was cached")

    cached = ScoringSession(refuse, lambda ids: refuse(), tiny_data.root, session.settings, cache,
                            adapter=adapter_key(student))
    np.testing.assert_array_equal(cached.score("el2n", ids), session.score("el2n", ids))

    # the next round's student (another adapter) is scored again
    from tutorloop.training.student import quiet_peft

    with quiet_peft():
        lora = get_peft_model(student.model, LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj"))
    lora.save_pretrained(tmp_path / "adapter")
    next_student = load_student(tiny_llava, adapter=tmp_path / "adapter", device="cpu")
    assert adapter_key(next_student) != adapter_key(student)
    again = ForwardCounter(next_student.model)
    _session(next_student, samples, tiny_data.root, cache=cache).score("perplexity", ids)
    assert again.calls == 2 and cache.forwarded["answer"] == 12


def test_unknown_scorer_is_a_clear_error(tiny_llava, tiny_data):
    session = _session(None, tiny_data.samples[:1], tiny_data.root)
    with pytest.raises(KeyError, match="unknown scorer 'loss'.*perturbation"):
        session.score("loss", ["colour-000"])
