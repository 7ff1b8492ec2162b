"""How the teacher is reached: its endpoint, model, dialect and patience. Light to import, so the CLI checks its
flags before the OpenAI client is loaded; the client itself is agents/teacher.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_TEACHER_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TEACHER_MODEL = "teacher"


def _env_base_url() -> str:
    return os.environ.get("OPENAI_BASE_URL") or DEFAULT_TEACHER_URL


def _env_api_key() -> SecretStr:
    # vLLM and llama.cpp accept any key unless started with one; the client insists on a non-empty one.
    return SecretStr(os.environ.get("OPENAI_API_KEY") or "EMPTY")


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(default_factory=_env_base_url, description="OpenAI-compatible endpoint ($OPENAI_BASE_URL)")
    model: str = Field(DEFAULT_TEACHER_MODEL, description="model name the endpoint serves")
    api_key: SecretStr = Field(default_factory=_env_api_key, exclude=True, repr=False,
                               description="$OPENAI_API_KEY; never stored in run.json nor logged")
    dialect: Literal["json_schema", "json_object", "auto"] = "auto"
    strict: bool = Field(True, description="json_schema 'strict' flag")
    concurrency: int = Field(16, ge=1, description="requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(3, ge=0, description="re-asks after an invalid or truncated reply")
    outage_wait_s: float = Field(300.0, ge=0, description=(
        "while the endpoint does not answer (connection refused, timeouts, HTTP 429/5xx) requests are re-sent with "
        "jittered backoff for up to this many seconds of outage; then they are given up as transport failures"))
    min_diagnosed: float = Field(0.8, ge=0, le=1, description=(
        "a round whose diagnoses a teacher outage cut below this share of the failures sent stops before "
        "selecting (resumable); bad replies do not count against it"))
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0)
    retry_temperature: float = Field(0.7, ge=0, description="re-asks after a truncated/invalid reply; "
                                     "at temperature 0 the same request would get the same reply")
    send_images: bool = Field(True, description="False for text-only teachers (the CPU demo teacher)")
    skill_map: str = Field("auto", description="ground diagnoses in the pool's skill map: 'auto' (skills.json "
                           "beside the index, when there is one), 'off' (free diagnosis), or a skills.json path")
    map_skills_shown: int = Field(24, ge=1, le=64, description="map skills listed per failure (nearest first)")
    cache_dir: Path | None = Field(None, description="reply cache; None: no cache")
    progress: bool = True

    @field_validator("base_url", mode="before")
    @classmethod
    def _default_url(cls, value: object) -> object:
        return _env_base_url() if value is None else value

    @field_validator("model", mode="before")
    @classmethod
    def _default_model(cls, value: object) -> object:
        return DEFAULT_TEACHER_MODEL if value is None else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _default_key(cls, value: object) -> object:
        return _env_api_key() if value in (None, "") else value
