"""Student-side scores for re-ranking, each a plain function ``(student, samples, image_root) -> array``.

- ``sample_embeddings``: the mean of the language model's last hidden states over the prompt (image
  tokens + instruction; padding masked out).
- ``perturbation_distance`` (the remote-sensing paper's generalisation score): delete ``n_words`` random
  words of the instruction, embed again, Euclidean distance to the unperturbed embedding, averaged over
  ``m`` perturbations. Each sample's perturbations come from a generator seeded by (seed, sample id),
  so a score does not depend on batch composition or order. Identical texts are embedded once, so
  ``n_words=0`` gives exactly 0.
- ``answer_perplexity`` / ``image_grounding`` (Adapt-∞): perplexity of the reference answer given the
  prompt with and without the image; grounding = PPL(without) / PPL(with), > 1 when the image helps.
  "Without the image" is a true text-only forward: no image placeholder in the prompt and no pixels
  (for LLaVA/Idefics3 that runs the language model alone), not a blank image. A text-only sample's
  "with image" side gets the blank image every text-only sample gets, so its grounding stays near 1.
- ``answer_statistics``: one teacher-forced forward over the reference answer giving, per sample, the mean
  token NLL (log-perplexity), the mean EL2N (Paul et al. 2021: the L2 norm of softmax minus the one-hot
  target — a loss-based difficulty bounded by sqrt(2)) and the mean predictive entropy over the answer
  tokens. training/scorers.py turns these into the named scorers and caches them.

The instruction is the last human turn (the one the reference answers), as in evaluation and training.
Left padding shifts absolute positions, which rotary embeddings (relative by construction) ignore up to
float rounding, so a row scores (nearly) the same alone or in a batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tutorloop.retrieval.records import Sample
from tutorloop.training.student import (
    IGNORE_INDEX,
    PromptItem,
    Student,
    accepts_logits_to_keep,
    answer_span_logits,
    build_inputs,
    length_order,
    load_images,
)

ANSWER_STATISTICS = ("nll", "el2n", "entropy")  # the columns of answer_statistics, in order


def _embed_items(student: Student, items: list[PromptItem], batch_size: int, progress: bool, desc: str) -> np.ndarray:
    student.model.eval()
    order = length_order([item.question for item in items])  # similar lengths together: less padding
    head = {"logits_to_keep": 1} if accepts_logits_to_keep(student.model) else {}  # the LM head is not needed
    out: np.ndarray | None = None
    with torch.inference_mode():
        for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=not progress):
            index = order[start : start + batch_size]
            batch = build_inputs(student, [items[i] for i in index])
            mask = batch["attention_mask"]
            result = student.model(**batch, output_hidden_states=True, use_cache=False, **head)
            hidden = result.hidden_states[-1].float()
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu().numpy()
            if out is None:
                out = np.zeros((len(items), pooled.shape[1]), dtype=np.float32)
            out[index] = pooled
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def sample_embeddings(
    student: Student, samples: Sequence[Sample], image_root: Path | None, batch_size: int = 16, *, progress: bool = False
) -> np.ndarray:
    """(n, hidden) float32: pooled last hidden states over image + instruction."""
    items = [PromptItem(load_images(s, image_root), s.question) for s in samples]
    return _embed_items(student, items, batch_size, progress, "embed").astype(np.float32)


def delete_words(text: str, n_words: int, rng: random.Random) -> str:
    """``text`` with ``n_words`` random words removed (at least one word is always kept)."""
    words = text.split()
    n = min(n_words, max(0, len(words) - 1))
    drop = set(rng.sample(range(len(words)), n)) if n else set()
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def perturbation_distance(
    student: Student,
    samples: Sequence[Sample],
    image_root: Path | None,
    *,
    n_words: int = 2,
    m: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """(n,) float32: mean Euclidean distance between the embeddings of the instruction and its perturbations."""
    if m < 1:
        raise ValueError("m (perturbations per sample) must be at least 1")
    items, slots = [], []  # one embedding per distinct (sample, text); slots map each variant to its row
    for sample in samples:
        rng = random.Random(f"{seed}:{sample.id}")
        images = load_images(sample, image_root)
        variants = [sample.question] + [delete_words(sample.question, n_words, rng) for _ in range(m)]
        rows: dict[str, int] = {}
        for text in variants:
            if text not in rows:
                rows[text] = len(items)
                items.append(PromptItem(images, text))
        slots.append([rows[text] for text in variants])
    embeddings = _embed_items(student, items, batch_size, progress, "perturb")
    scores = [np.linalg.norm(embeddings[rows[1:]] - embeddings[rows[0]], axis=1).mean() for rows in slots]
    return np.asarray(scores, dtype=np.float32)


def answer_perplexity(
    student: Student,
    samples: Sequence[Sample],
    image_root: Path | None,
    *,
    with_image: bool = True,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """(n,) float64: exp of the mean negative log-likelihood of the reference answer (+ EOS) tokens."""
    stats = answer_statistics(student, samples, image_root, with_image=with_image, batch_size=batch_size,
                              progress=progress)
    return np.exp(stats[:, ANSWER_STATISTICS.index("nll")])


def image_grounding(
    student: Student, samples: Sequence[Sample], image_root: Path | None, *, batch_size: int = 16, progress: bool = False
) -> np.ndarray:
    """(n,) PPL(answer | text only) / PPL(answer | image + text): how much the image helps the answer."""
    with_image = answer_perplexity(student, samples, image_root, with_image=True, batch_size=batch_size,
                                   progress=progress)
    without = answer_perplexity(student, samples, image_root, with_image=False, batch_size=batch_size,
                                progress=progress)
    return without / with_image


def answer_statistics(
    student: Student,
    samples: Sequence[Sample],
    image_root: Path | None,
    *,
    with_image: bool = True,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """(n, 3) float64: per sample, the mean over its reference answer (+ end) tokens of the NLL, the EL2N
    and the predictive entropy (columns ``ANSWER_STATISTICS``), from one forward per batch."""
    student.model.eval()
    order = length_order([f"{s.question} {s.reference}" for s in samples])
    out = np.zeros((len(samples), len(ANSWER_STATISTICS)))
    with torch.inference_mode():
        for start in tqdm(range(0, len(samples), batch_size), desc="answer stats", unit="batch",
                          disable=not progress):
            index = order[start : start + batch_size]
            items = [PromptItem(load_images(samples[i], image_root) if with_image else [], samples[i].question,
                                samples[i].reference) for i in index]
            out[index] = _batch_statistics(student, build_inputs(student, items, with_image=with_image))
    return out


def _batch_statistics(student: Student, batch) -> np.ndarray:
    """NLL, EL2N and entropy of the answer tokens, the LM head run on the answer span only (as answer_nll)."""
    logits, targets = answer_span_logits(student, batch)
    log_p = torch.log_softmax(logits, dim=-1)
    mask = targets != IGNORE_INDEX
    safe = targets.clamp(min=0).unsqueeze(-1)
    p = log_p.exp()
    p_target = p.gather(-1, safe).squeeze(-1)
    nll = -log_p.gather(-1, safe).squeeze(-1)
    # ||p - onehot(y)||^2 = sum p^2 - 2 p_y + 1 (no one-hot of the vocabulary's size is built)
    el2n = ((p * p).sum(-1) - 2 * p_target + 1).clamp(min=0).sqrt()
    entropy = -(p * log_p).sum(-1)
    counts = mask.sum(1).clamp(min=1)
    columns = [(value * mask).sum(1) / counts for value in (nll, el2n, entropy)]
    return torch.stack(columns, dim=1).double().cpu().numpy()
