"""Evaluate the student: batched greedy generation, answer extraction, matching, per-source accuracy.

A student may answer plainly ("red") or reason first ("Step 1: ... Step 2: ... Answer: red"). The
reasoning is split into numbered steps (``EvalRecord.steps``: the teacher points at the erroneous one)
and only the final answer is matched against the reference.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tutorloop.retrieval.records import Sample
from tutorloop.training.configs import DEFAULT_BATCH_SIZE, DEFAULT_MATCHER, DEFAULT_MAX_NEW_TOKENS
from tutorloop.training.matching import get_matcher
from tutorloop.training.records import EvalRecord
from tutorloop.training.student import Student, build_inputs, items_from_samples, length_order, stop_token_ids

_ANSWER = re.compile(r"(?:final\s+)?answer\s*(?:is)?\s*[:：]|\banswer\s+is\s+", re.I)
_STEP = re.compile(r"(?:^|\s)(?:step\s*\d+\s*[:.)]|\d+[.)]\s)", re.I)
_LEAD_IN = re.compile(r"(?:\b(?:so|thus|therefore|hence|the|my|final|and)\b[\s,]*)+$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclass
class EvalResult:
    records: list[EvalRecord]
    summary: dict = field(default_factory=dict)


def split_answer(output: str) -> tuple[list[str], str]:
    """(reasoning steps, final answer) of a generated text.

    Without an ``Answer:`` marker and on a single line, the whole text is the answer and there are no
    steps. Otherwise the text before the last marker is split into steps — by ``Step N:`` / ``N.``
    markers, else by lines, else by sentences — and the final answer is the first line after the marker
    (or the last step when there is no marker).
    """
    text = output.strip()
    markers = list(_ANSWER.finditer(text))
    if markers:
        reasoning, answer = text[: markers[-1].start()], text[markers[-1].end():].strip().split("\n")[0]
        reasoning = _LEAD_IN.sub("", reasoning.rstrip())  # "... So the answer is": "So the" is no step
    elif "\n" in text or _STEP.search(text):
        reasoning, answer = text, ""
    else:
        return [], text
    steps = split_steps(reasoning)
    if not markers and steps:
        answer = steps[-1]
    elif answer and steps:
        steps.append(f"Answer: {answer}")
    return steps, answer.strip()


def split_steps(text: str) -> list[str]:
    text = text.strip()
    if not text:
        return []
    if _STEP.search(text):
        pieces = _STEP.split(text)
    elif "\n" in text:
        pieces = text.split("\n")
    else:
        pieces = _SENTENCE.split(text)
    return [p.strip() for p in pieces if p.strip()]


def generate(student: Student, samples: list[Sample], image_root: Path | None, *, max_new_tokens: int) -> list[str]:
    """Greedy continuations of one batch, special tokens removed; a row stops at any of the student's stop
    tokens (EOS, the template's end-of-turn token, the model's own EOS ids)."""
    inputs = build_inputs(student, items_from_samples(samples, image_root, with_answer=False))
    tokenizer = student.tokenizer
    with torch.inference_mode():
        out = student.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(student),
        )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(
    student: Student,
    samples: list[Sample],
    image_root: Path | None,
    *,
    matcher: str = DEFAULT_MATCHER,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: bool = True,
) -> EvalResult:
    match = get_matcher(matcher)
    student.model.eval()
    done: dict[int, EvalRecord] = {}
    order = length_order([s.question for s in samples])  # similar lengths together: less padding
    bar = tqdm(total=len(samples), desc="evaluate", unit="sample", disable=not progress)
    for start in range(0, len(samples), batch_size):
        index = order[start : start + batch_size]
        batch = [samples[i] for i in index]
        outputs = generate(student, batch, image_root, max_new_tokens=max_new_tokens)
        for i, sample, output in zip(index, batch, outputs, strict=True):
            done[i] = make_record(sample, output, match)
        bar.update(len(batch))
        bar.set_postfix(accuracy=f"{sum(r.correct for r in done.values()) / len(done):.3f}")
    bar.close()
    records = [done[i] for i in range(len(samples))]  # back in the file's order
    return EvalResult(records=records, summary=summarize(records))


def make_record(sample: Sample, output: str, match) -> EvalRecord:
    steps, answer = split_answer(output)
    return EvalRecord(
        id=sample.id, source=sample.source, image=sample.images[0] if sample.images else None,
        images=sample.images if len(sample.images) > 1 else [], question=sample.question,
        reference=sample.reference, prediction=answer, steps=steps,
        correct=match(answer, sample.reference, sample.question),
        output=output if output.strip() != answer else None,
    )


def summarize(records: list[EvalRecord]) -> dict:
    """``{"accuracy", "n", "by_source": {source: {"accuracy", "n", "correct"}}}``; sources sorted."""
    by_source: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        by_source[record.source or "unknown"].append(record.correct)
    n = len(records)
    correct = sum(r.correct for r in records)
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "by_source": {
            name: {"accuracy": sum(flags) / len(flags), "n": len(flags), "correct": sum(flags)}
            for name, flags in sorted(by_source.items())
        },
    }
