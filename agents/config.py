"""One validated config for `tutorloop run`, loadable from YAML/TOML and overridable by flags.

Precedence: defaults < ``--config FILE`` < flags given on the command line. Nested sections
(``teacher``, ``rerank``, ``lora``) are the configs of the stages they belong to.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.teacher import TeacherConfig
from retrieval.rerank import RerankConfig
from training.lora import LoraTrainConfig

Selector = Literal["teacher", "failures", "random"]


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: Path
    val: Path
    out: Path
    budget: int = Field(gt=0, description="samples selected over the whole run")
    rounds: int = Field(3, gt=0)
    test: Path | None = None
    generic: Path | None = Field(None, description="skills the student already has: measures forgetting")
    image_root: Path | None = Field(None, description="for val/test/generic; default: each file's own folder")
    store: Path | None = None
    qdrant_url: str | None = None
    collection: str = "pool"
    selector: Selector = "teacher"
    seed: int = 0
    target_accuracy: float | None = Field(None, ge=0, le=1)
    patience: int = Field(1, ge=1, description="rounds without a val gain before stopping")
    max_diagnoses: int = Field(200, ge=1, description="failures sent to the teacher per round (a seeded sample)")
    candidates_factor: int = Field(4, ge=1, description="retrieve this many x a gap's share")
    known_share: float = Field(0.0, ge=0, lt=1, description=(
        "share of each round's budget spent on pool samples the untouched student already answers right "
        "(teacher/failures selectors): replay of the skills it has, so the gaps' samples do not erase them"))
    eval_batch_size: int = Field(32, gt=0)
    matcher: str = "vqa"
    max_new_tokens: int = Field(16, gt=0)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    lora: LoraTrainConfig = Field(default_factory=LoraTrainConfig)

    @model_validator(mode="after")
    def _one_store(self) -> RunConfig:
        if self.store is None and self.qdrant_url is None:
            raise ValueError("give the pool index: --store DIR (embedded Qdrant) or --qdrant-url URL")
        if self.store is not None and self.qdrant_url is not None:
            raise ValueError("give either --store or --qdrant-url, not both")
        return self

    def image_root_of(self, data_file: Path) -> Path:
        return self.image_root or data_file.parent

    def per_round_budget(self, round_number: int) -> int:
        """Split the budget evenly over the rounds; the last rounds take the remainder."""
        base, extra = divmod(self.budget, self.rounds)
        return base + (1 if round_number > self.rounds - extra else 0)


def load_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in {".yaml", ".yml"}:
        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"{path}: config must be .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level of a config must be a mapping")
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; ``None`` values (flags not given) are skipped."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key, {}), dict):
            merged[key] = merge(merged.get(key, {}), value)
        else:
            merged[key] = value
    return merged


def build_config(config_file: Path | None, overrides: dict[str, Any]) -> RunConfig:
    base = load_config_file(config_file) if config_file else {}
    return RunConfig.model_validate(merge(base, overrides))
