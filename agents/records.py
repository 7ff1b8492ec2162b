"""The teacher's boundary records: a `Diagnosis` (what the teacher must reply) and a `DiagnosisLog` row.

The JSON schema sent to a teacher without a skill map is generated from `FreeDiagnosis`
(`FreeDiagnosis.model_json_schema()`); one with a map gets agents/skills.py's schema, whose skill is an
enum of the map's names. Both become a `Diagnosis`. Field descriptions stay short: they are part of every request. Every reply is parsed into a
`Diagnosis` or rejected; a rejected reply is kept in its `DiagnosisLog` row with the raw text and
the reason, never dropped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import SelectionWhy
from tutorloop.training.records import EvalRecord

ErrorType = Literal["perception", "reasoning", "knowledge", "instruction_following", "format", "other"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
SKILL_MAX_WORDS = 6


def normalise_skill(name: str) -> str:
    """Lowercase kebab-case, at most `SKILL_MAX_WORDS` words: "Counting Objects!" -> "counting-objects"."""
    words = [w for w in _NOT_SLUG.split(name.lower()) if w]
    return "-".join(words[:SKILL_MAX_WORDS])


def skill_name(value: str, field: str) -> str:
    """``normalise_skill`` for a validator: a name with no letters or digits is an error naming ``field``."""
    name = normalise_skill(value)
    if not name:
        raise ValueError(f"{field} has no letters or digits: {value!r}")
    return name


# What a teacher without a skill map replies: the skill in its own words. Its JSON schema is the
# ``diagnosis`` schema sent to such a teacher, so it has no docstring (that would become the schema's
# description, sent with every request) and keeps the title "Diagnosis" it had before the map existed.
class FreeDiagnosis(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Diagnosis")

    erroneous_step: int | None = Field(
        description="1-based number of the first wrong step; null if no step is wrong or none was given", ge=1
    )
    error_type: ErrorType = Field(description="kind of error")
    missing_skill: str = Field(description="the missing capability, a short skill name such as 'counting-shapes'",
                               min_length=1, max_length=80)
    explanation: str = Field(description="one or two sentences on why the answer is wrong", min_length=1)
    # Each query's min_length is in the JSON schema, so constrained decoding (llama.cpp, vLLM) cannot emit
    # an empty one (a small teacher otherwise does, and the reply is rejected).
    queries: list[Annotated[str, Field(min_length=1)]] = Field(
        description="1-3 short search queries for training data that teaches the skill", min_length=1, max_length=3)

    @field_validator("missing_skill")
    @classmethod
    def _kebab(cls, value: str) -> str:
        return skill_name(value, "missing_skill")

    @field_validator("queries")
    @classmethod
    def _non_empty_queries(cls, value: list[str]) -> list[str]:
        queries = [" ".join(q.split()) for q in value]
        if any(not q for q in queries):
            raise ValueError("every query must be non-empty")
        return queries


class WeightedSkill(BaseModel):
    """A skill of the pool's skill map (agents/skills.py) and its share of the diagnosis."""

    model_config = ConfigDict(extra="forbid")

    skill: str
    weight: float = Field(ge=0, le=1)


class Diagnosis(FreeDiagnosis):
    """A diagnosis as the loop keeps it (a row of ``diagnoses.jsonl``).

    A grounded diagnosis (the teacher chose from the skill map) has ``skills``: up to 3 map skills with
    weights summing to 1, the heaviest first, and ``missing_skill`` is the first of them. When the teacher
    chose "none of these", ``other_skill`` holds its free text (and ``missing_skill`` that text, normalised).
    """

    model_config = ConfigDict(extra="forbid", title="Diagnosis")

    skills: list[WeightedSkill] = Field(default_factory=list, max_length=3)
    other_skill: str | None = None
    grounded: bool = False


class DiagnosisLog(BaseModel):
    """One failure of the student and what the teacher made of it (a row of ``diagnoses.jsonl``)."""

    model_config = ConfigDict(extra="forbid")

    sample_id: str
    source: str | None = None
    question: str
    reference: str
    prediction: str
    steps: list[str] = Field(default_factory=list)
    diagnosis: Diagnosis | None = None
    error: str | None = Field(None, description="why the teacher's reply was rejected")
    raw: str | None = Field(None, description="the teacher's raw reply, kept when it was rejected")
    attempts: int = 0
    cached: bool = False
    transport: bool = Field(False, description="given up because the teacher did not answer (asked again on resume)")
    warnings: list[str] = Field(default_factory=list)
    selected_ids: list[str] = Field(default_factory=list, description="samples the diagnosis led to")

    @classmethod
    def from_failure(cls, record: EvalRecord, **fields) -> DiagnosisLog:
        """A row for a failed sample; without a teacher (``--selector failures``) it stays undiagnosed."""
        return cls(sample_id=record.id, source=record.source, question=record.question,
                   reference=record.reference, prediction=record.prediction, steps=list(record.steps), **fields)


# --- the loop's artefacts (agents/run_dir.py binds each to its file) ----------------------------------


class SelectedSample(BaseModel):
    """A row of ``selected.jsonl``: the pool sample in its own format plus ``"selection": {why}``, so any
    LLaVA-style trainer reads the file as is and a person sees why each sample is there."""

    sample: Sample
    why: SelectionWhy

    def to_record(self) -> dict:
        return {**self.sample.to_record(), "selection": self.why.model_dump()}

    @classmethod
    def from_record(cls, row: dict) -> SelectedSample:
        fields = dict(row)
        why = fields.pop("selection")
        return cls(sample=Sample.model_validate(fields), why=SelectionWhy.model_validate(why))


class OperatingPoint(BaseModel):
    """One point of a round's learning-forgetting front: the round's trained change scaled by ``alpha`` (0: the
    round's start, 1: its end), its target val accuracy and its accuracy on the retention split."""

    alpha: float
    val_accuracy: float
    retention_accuracy: float | None = None
    forgetting: float | None = Field(None, description="accuracy points lost on the retention split since round 0")
    within_bound: bool = True


class RoundFront(BaseModel):
    """``front.json`` of a round: the operating points measured after training and the one kept."""

    round: int
    retention_split: Literal["generic", "probe"] | None = None
    max_forgetting: float | None = None
    points: list[OperatingPoint]
    chosen: float
    reason: str
    seconds: float = 0.0

    def point(self, alpha: float) -> OperatingPoint:
        return next(p for p in self.points if p.alpha == alpha)


class RoundMetrics(BaseModel):
    """``metrics.json`` of a round: accuracy per split after the round (round 0: the student as given).
    Its presence means the round is complete. ``forgetting``: points lost since round 0 on the retention split
    (the generic split, else the probe drawn from the pool)."""

    round: int
    val_accuracy: float | None = None
    val_by_source: dict[str, Any] | None = None
    test_accuracy: float | None = None
    test_by_source: dict[str, Any] | None = None
    generic_accuracy: float | None = None
    generic_by_source: dict[str, Any] | None = None
    probe_accuracy: float | None = None
    probe_by_source: dict[str, Any] | None = None
    forgetting: float | None = None
    alpha: float | None = Field(None, description="the operating point kept (front.json)")
    kept_start: bool | None = Field(None, description="the round kept the weights it started from")
    approval: str | None = Field(None, description="approve runs: 'approved' as planned or 'edited' (approval.json)")
    diagnoses: dict[str, int] | None = Field(None, description="teacher runs: failures, sent (the rest not sent: "
                                             "max_diagnoses), diagnosed, rejected")
    short: int | None = Field(None, description="samples the gaps asked for that the pool could not give")
    selected: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def retention_accuracy(self) -> float | None:
        return self.generic_accuracy if self.generic_accuracy is not None else self.probe_accuracy

    def to_record(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)  # a split the run has not got stays absent

    def accuracy(self, split: str) -> float | None:
        return getattr(self, f"{split}_accuracy")

    def by_source(self, split: str) -> dict[str, Any]:
        return getattr(self, f"{split}_by_source") or {}


class Accuracies(BaseModel):
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    generic_accuracy: float | None = None
    probe_accuracy: float | None = None
    forgetting: float | None = None


class RoundSummary(BaseModel):
    round: int
    selected: int
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    generic_accuracy: float | None = None
    probe_accuracy: float | None = None
    forgetting: float | None = None
    alpha: float | None = None
    kept_start: bool | None = None
    approval: str | None = None
    diagnoses: dict[str, int] | None = None
    short: int | None = None
    seconds: dict[str, float] = Field(default_factory=dict)


class FinalSummary(Accuracies):
    rounds: int
    selected: int


class RunSummary(BaseModel):
    """``summary.json``: the run at a glance (design.md's contract)."""

    initial: Accuracies
    rounds: list[RoundSummary]
    final: FinalSummary
    stop_reason: str | None
    selector: str
    budget: int

    @classmethod
    def from_history(cls, history: list[RoundMetrics], stop_reason: str | None, selector: str,
                     budget: int) -> RunSummary:
        keys = ("val_accuracy", "test_accuracy", "generic_accuracy", "probe_accuracy", "forgetting")
        rounds = [RoundSummary(round=m.round, selected=m.selected, seconds=m.seconds, alpha=m.alpha,
                               kept_start=m.kept_start, approval=m.approval, diagnoses=m.diagnoses, short=m.short,
                               **{k: getattr(m, k) for k in keys})
                  for m in history[1:]]
        return cls(initial=Accuracies(**{k: getattr(history[0], k) for k in keys}), rounds=rounds,
                   final=FinalSummary(**{k: getattr(history[-1], k) for k in keys}, rounds=len(rounds),
                                      selected=sum(r.selected for r in rounds)),
                   stop_reason=stop_reason, selector=selector, budget=budget)


# Fields whose default changed what a round does, with the value of every run before the field existed
LORA_BEFORE_IT_EXISTED = {"early_stop": False, "anchor_weight": 0.0}
RUN_BEFORE_IT_EXISTED = {"known_on_top": False, "max_forgetting": None, "operating_points": [], "probe_size": 0}


class RunInfo(BaseModel):
    """``run.json``: the run id (the checkpointer's thread) and the validated config it runs with."""

    run_id: str
    config: dict[str, Any]
    pool_image_root: str | None = Field(None, description="where the pool's images are (from the index)")
    skill_map: dict[str, Any] | None = Field(None, description="teacher runs: whether diagnoses are grounded in "
                                             "the pool's skill map, its path and why (agents/skills.py)")

    @field_validator("config")
    @classmethod
    def _round_recipe_it_began_with(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A run written before a LoRA default changed what a round does resumes with the recipe it began with:
        its config has every LoRA field of its time, so a missing one takes the value from before it existed
        (fixed epochs before the held-out stop, no anchors before anchoring; a default must not change a run
        half-way)."""
        lora = config.get("lora")
        if isinstance(lora, dict) and "epochs" in lora:
            config = {**config, "lora": {**LORA_BEFORE_IT_EXISTED, **lora}}
        if "known_share" in config:  # a whole config of its time
            config = {**RUN_BEFORE_IT_EXISTED, **config}
        return config
