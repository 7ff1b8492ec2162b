"""The student-side scorers by name (Adapt-∞'s pool of scores), computed on a shortlist and cached.

Every scorer gives one number per sample, higher = preferred by the re-rank (retrieval/rerank.py mixes it
with relevance, or picks one per cluster by the entropy of its distribution):

| name | what | computed from |
|---|---|---|
| ``perturbation`` | mean embedding distance under word deletions (the remote-sensing paper's generalisation score) | ``m + 1`` prompt forwards |
| ``perplexity`` | PPL of the reference answer given image + instruction (hard for the student) | the answer pass |
| ``image_grounding`` | PPL(answer, text only) / PPL(answer, with image): how much the image matters | the answer pass + the text-only pass |
| ``el2n`` | mean over answer tokens of the L2 norm of softmax minus one-hot (loss-based difficulty) | the answer pass |
| ``answer_entropy`` | mean predictive entropy over the answer tokens (the student's uncertainty) | the answer pass |

So a scorer is a small recipe over *passes*: forwards of the student over the shortlist. Each pass is
computed in batches for the ids it has not seen and cached per (pass and its settings, adapter, sample id)
in a `ScoreCache`; scorers that share a pass share its forwards, and asking twice costs no forward. A
round makes one cache (agents/stages.py), so the entropy rule's five scorers and the chosen one cost
three passes, not six. The cache lives in memory for the round: a resumed round recomputes its scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tutorloop.retrieval.records import Sample

if TYPE_CHECKING:  # the registry is read by the CLI's --help: torch is imported only when a pass runs
    from tutorloop.training.student import Student

NLL, EL2N, ENTROPY = 0, 1, 2  # the columns of training/scores.py's answer_statistics (ANSWER_STATISTICS)


@dataclass(frozen=True)
class ScoreSettings:
    """What a pass's values depend on besides the student and the sample (part of the cache key)."""

    perturbation_words: int = 2
    perturbation_draws: int = 3
    seed: int = 0
    batch_size: int = 16


Pass = Callable[["Student", Sequence[Sample], "Path | None", ScoreSettings], np.ndarray]  # -> (n,) or (n, c)


def _perturbation_pass(student: Student, samples: Sequence[Sample], root: Path | None, s: ScoreSettings) -> np.ndarray:
    from tutorloop.training.scores import perturbation_distance

    return perturbation_distance(student, samples, root, n_words=s.perturbation_words, m=s.perturbation_draws,
                                 seed=s.seed, batch_size=s.batch_size)


def _answer_pass(student: Student, samples: Sequence[Sample], root: Path | None, s: ScoreSettings) -> np.ndarray:
    from tutorloop.training.scores import answer_statistics

    return answer_statistics(student, samples, root, with_image=True, batch_size=s.batch_size)


def _text_only_pass(student: Student, samples: Sequence[Sample], root: Path | None, s: ScoreSettings) -> np.ndarray:
    from tutorloop.training.scores import answer_statistics

    return answer_statistics(student, samples, root, with_image=False, batch_size=s.batch_size)


PASSES: dict[str, Pass] = {"perturbation": _perturbation_pass, "answer": _answer_pass,
                           "answer_text_only": _text_only_pass}


def _pass_key(name: str, settings: ScoreSettings) -> str:
    if name == "perturbation":  # only this pass is random: its draws and seed are part of its identity
        return f"perturbation:n{settings.perturbation_words}:m{settings.perturbation_draws}:seed{settings.seed}"
    return name


@dataclass(frozen=True)
class Scorer:
    name: str
    help: str  # one line: what a high score means
    passes: tuple[str, ...]
    combine: Callable[..., np.ndarray]  # the passes' arrays, in order -> (n,) scores


SCORERS: dict[str, Scorer] = {s.name: s for s in (
    Scorer("perturbation", "embedding moves a lot when words are deleted (fragile: worth learning)",
           ("perturbation",), lambda distance: distance),
    Scorer("perplexity", "the student finds the reference answer unlikely (hard)",
           ("answer",), lambda stats: np.exp(stats[:, NLL])),
    Scorer("image_grounding", "the image makes the answer likelier (PPL text only / PPL with image)",
           ("answer", "answer_text_only"), lambda with_image, text_only: np.exp(text_only[:, NLL] - with_image[:, NLL])),
    Scorer("el2n", "softmax far from the reference tokens (loss-based difficulty, EL2N)",
           ("answer",), lambda stats: stats[:, EL2N]),
    Scorer("answer_entropy", "the student is unsure over the answer tokens (predictive entropy)",
           ("answer",), lambda stats: stats[:, ENTROPY]),
)}
RULES = {"entropy": "per cluster, the scorer whose scores spread the most (Adapt-∞: histogram entropy)",
         "none": "relevance only: no student-side score"}


def scorer_choices() -> list[str]:
    """What ``RerankConfig.scorer`` may be: a scorer's name or a rule."""
    return [*SCORERS, *RULES]


@dataclass
class ScoreCache:
    """Pass values per (pass key, adapter, sample id); ``forwarded`` counts the samples each pass computed."""

    values: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)


def adapter_key(student: Student) -> str:
    """Which student a score belongs to: the base model and the adapter on it."""
    return f"{student.name}|{student.adapter.resolve() if student.adapter is not None else 'base'}"


@dataclass
class ScoringSession:
    """Scores by name for ids of the pool, computed on demand for the ids asked (the shortlist).

    ``student`` and ``fetch`` are called only when a pass has ids it has not computed yet, so a session
    whose scores are all cached loads neither the student nor the samples."""

    student: Callable[[], Student]
    fetch: Callable[[list[str]], list[Sample]]
    image_root: Path | None
    settings: ScoreSettings = field(default_factory=ScoreSettings)
    cache: ScoreCache = field(default_factory=ScoreCache)
    adapter: str | None = None  # the adapter key; taken from the student the first time it is loaded

    def score(self, name: str, ids: Sequence[str]) -> np.ndarray:
        if name not in SCORERS:
            raise KeyError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
        scorer = SCORERS[name]
        if not ids:
            return np.zeros(0)
        return np.asarray(scorer.combine(*(self._pass(p, ids) for p in scorer.passes)), dtype=np.float64)

    def _pass(self, name: str, ids: Sequence[str]) -> np.ndarray:
        key = _pass_key(name, self.settings)
        adapter = self.adapter
        missing = sorted({i for i in ids if adapter is None or (key, adapter, i) not in self.cache.values})
        if missing:
            student = self.student()
            self.adapter = adapter = adapter_key(student)
            missing = [i for i in missing if (key, adapter, i) not in self.cache.values]
        if missing:
            computed = PASSES[name](student, self.fetch(missing), self.image_root, self.settings)
            for i, row in zip(missing, computed, strict=True):
                self.cache.values[(key, adapter, i)] = np.asarray(row)
            self.cache.forwarded[name] = self.cache.forwarded.get(name, 0) + len(missing)
        return np.stack([self.cache.values[(key, adapter, i)] for i in ids])
