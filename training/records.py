"""The record of one evaluated sample: what the teacher diagnoses and a person reviews."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    source: str | None = None
    image: str | None = Field(None, description="the sample's first image (relative to its image root)")
    images: list[str] = Field(default_factory=list, description="every image, when the sample has several")
    question: str
    reference: str
    prediction: str = Field(description="the final answer extracted from the student's output")
    steps: list[str] = Field(default_factory=list, description="the student's reasoning, one entry per step")
    correct: bool
    output: str | None = Field(None, description="the student's raw output, when it differs from prediction")
