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
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    speaker: Literal["human", "gpt"] = Field(alias="from")
    value: str


class Sample(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str = Field(min_length=1)
    image: str | None = None
    conversations: list[Turn] = Field(min_length=2)
    source: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: object) -> object:
        # Ids are strings in the contract; refuse ints rather than silently coercing (7 and "7" would clash).
        if not isinstance(value, str):
            raise ValueError(f"id must be a string, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _has_both_roles(self) -> Sample:
        speakers = {turn.speaker for turn in self.conversations}
        if speakers != {"human", "gpt"}:
            raise ValueError("conversations need at least one human and one gpt turn")
        if self.conversations[-1].speaker != "gpt":
            raise ValueError("the last turn must be a gpt turn (the reference answer)")
        return self

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
        return None if self.image is None else image_root / self.image

    def to_record(self) -> dict:
        """The JSON form, as read (``from`` keys, extra metadata kept)."""
        return self.model_dump(by_alias=True, exclude_none=True)


def strip_image_tag(text: str) -> str:
    return IMAGE_TAG.sub(" ", text).strip()
