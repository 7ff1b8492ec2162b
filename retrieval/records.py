"""The one record every data file is made of: a sample in the LLaVA conversation format.

Pool, validation and test files share it; the last ``gpt`` turn of a validation/test sample is its
reference answer. Extra keys are kept (``extra="allow"``) so metadata survives a round trip.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGE_TAG = re.compile(r"\s*<image>\s*")


class Turn(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")  # a turn's extra keys are kept

    speaker: Literal["human", "gpt", "system"] = Field(alias="from")
    value: str


class Sample(BaseModel):
    """A sample in the canonical LLaVA form (retrieval/formats.py reads the others into it); ``form`` is
    the form it was read in, and ``to_record()`` writes it back in that form."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str = Field(min_length=1)
    image: str | list[str] | None = None
    conversations: list[Turn] = Field(min_length=2)
    source: str | None = None
    form: Literal["llava", "sharegpt", "messages"] = Field("llava", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: object) -> object:
        from tutorloop.retrieval.formats import to_canonical

        return to_canonical(data) if isinstance(data, dict) else data

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: object) -> object:
        # Integer ids arrive as their decimal string (retrieval/formats.py); anything else is refused.
        if not isinstance(value, str):
            raise ValueError(f"id must be a string or an integer, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _has_both_roles(self) -> Sample:
        speakers = {turn.speaker for turn in self.conversations}
        if not {"human", "gpt"} <= speakers:
            raise ValueError("conversations need at least one human and one gpt turn")
        if self.conversations[-1].speaker != "gpt":
            raise ValueError("the last turn must be a gpt turn (the reference answer)")
        return self

    @property
    def images(self) -> list[str]:
        """Every image of the sample, in order (empty for a text-only sample)."""
        return [] if self.image is None else [self.image] if isinstance(self.image, str) else list(self.image)

    @property
    def question(self) -> str:
        """The human turn that the reference answer replies to, without ``<image>`` tags."""
        return strip_image_tag(self.conversations[-2].value)

    @property
    def reference(self) -> str:
        return self.conversations[-1].value

    @property
    def instruction_text(self) -> str:
        """All human turns, ``<image>`` tags stripped: what the pool index embeds."""
        return " ".join(strip_image_tag(t.value) for t in self.conversations if t.speaker == "human")

    def image_path(self, image_root: Path) -> Path | None:
        """The first image (the one single-image code paths use)."""
        return image_root / self.images[0] if self.images else None

    def image_paths(self, image_root: Path) -> list[Path]:
        return [image_root / image for image in self.images]

    def to_record(self, form: str | None = None) -> dict:
        """The JSON form, as read (``from`` keys, extra metadata kept), or converted to ``form``."""
        from tutorloop.retrieval.formats import export

        canonical = self.model_dump(by_alias=True, exclude_none=True)
        form = form or self.form
        return canonical if form == "llava" else export(canonical, form)


def strip_image_tag(text: str) -> str:
    return IMAGE_TAG.sub(" ", text).strip()
