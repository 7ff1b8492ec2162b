"""One validated config per entry point (`tutorloop run`, `tutorloop index`), loadable from YAML/TOML/JSON
and overridable by flags.

Precedence: defaults < ``--config FILE`` < flags given on the command line. Nested sections
(``teacher``, ``rerank``, ``lora``) are the configs of the stages they belong to; every default is
defined once, here or in the stage's own module.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tutorloop.agents.selectors import SELECTORS
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.retrieval.defaults import DEFAULT_COLLECTION
from tutorloop.retrieval.embed import DEFAULT_EMBEDDER
from tutorloop.retrieval.rerank import RerankConfig
from tutorloop.retrieval.semdedup import DEFAULT_THRESHOLD as SEMDEDUP_THRESHOLD
from tutorloop.training.configs import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MATCHER,
    DEFAULT_MAX_NEW_TOKENS,
    LessConfig,
    RoundLoraConfig,
)

DEFAULT_STORE = Path(".tutorloop/index")


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
    collection: str = DEFAULT_COLLECTION
    selector: str = Field("teacher", description="a name of agents/selectors (SELECTORS)")
    seed: int = 0
    target_accuracy: float | None = Field(None, ge=0, le=1)
    patience: int = Field(1, ge=1, description="rounds without a val gain before stopping")
    max_diagnoses: int = Field(200, ge=1, description="failures sent to the teacher per round (a seeded sample)")
    candidates_factor: int = Field(4, ge=1, description="retrieve this many x a gap's share")
    # Replay 1:1 on top of the budget, no anchors, then the operating point within max_forgetting: on the tuning
    # worlds of the learning-forgetting front (benchmarks/front.py, docs/results.md) it kept the most target
    # accuracy within the bound
    known_on_top: bool = Field(True, description=(
        "known replay comes on top of the budget (known_share known samples per budget sample, as general data is "
        "mixed into a fine-tune) instead of out of it"))
    known_share: float = Field(1.0, ge=0, le=1, description=(
        "share of each round's budget spent on pool samples the untouched student already knows (every "
        "selector): replay of the skills it has, so the gaps' samples do not erase them; after round 1 it "
        "follows the forgetting measured on the generic split (agents/retention.py); 0 switches it off"))
    known_quantile: float = Field(0.5, gt=0, le=1, description=(
        "a pool sample counts as known when the untouched student's answer perplexity on it is at most this "
        "quantile of its perplexity over a uniform draw of the pool"))
    approve: bool = Field(False, description=(
        "stop after each round's plan, with a preview of what each gap would buy, until `tutorloop approve` records "
        "a person's decision (and its edits)"))
    max_forgetting: float | None = Field(1.0, ge=0, description=(
        "accuracy points the student may lose on the retention split (the generic split, else the probe) since it "
        "was given; after each round the operating point with the best target val accuracy within it is kept "
        "(the round's start when none is); null: no bound"))
    operating_points: list[float] = Field([0.25, 0.5, 0.75, 1.0], description=(
        "the share of a round's trained change measured after it trains (1: all of it; the start, 0, is always a "
        "point); empty: keep the trained adapter as it is"))
    probe_size: int = Field(200, ge=0, description=(
        "without --generic: pool samples the untouched student answers right, spread over clusters, drawn once "
        "per run and never trained on, on which forgetting is measured; 0: none"))
    export: Literal["llava", "sharegpt", "messages"] | None = Field(None, description=(
        "form of selected.jsonl; default: each sample's own form (the pool's), so its trainer reads it as is"))
    eval_batch_size: int = Field(DEFAULT_BATCH_SIZE, gt=0)
    matcher: str = DEFAULT_MATCHER
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, gt=0)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    lora: RoundLoraConfig = Field(default_factory=RoundLoraConfig)
    less: LessConfig = Field(default_factory=LessConfig, description="the less selector's warm-up and features")

    @field_validator("operating_points")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(not 0 < a <= 1 for a in value):
            raise ValueError(f"operating_points must lie in (0, 1] (shares of the trained change): {value}")
        return sorted(set(value))

    @field_validator("selector")
    @classmethod
    def _known_selector(cls, value: str) -> str:
        if value not in SELECTORS:
            raise ValueError(f"unknown selector {value!r}; known: {', '.join(SELECTORS)}")
        return value

    @model_validator(mode="after")
    def _known_scorer(self) -> RunConfig:
        from tutorloop.training.scorers import scorer_choices

        if self.rerank.scorer not in scorer_choices():
            raise ValueError(f"unknown rerank.scorer {self.rerank.scorer!r}; known: {', '.join(scorer_choices())}")
        return self

    @model_validator(mode="after")
    def _share_within_budget(self) -> RunConfig:
        if not self.known_on_top and self.known_share >= 1:
            raise ValueError(f"known_share {self.known_share} leaves nothing of the budget to the gaps; give a share "
                             "below 1, or known_on_top: true to replay on top of the budget")
        return self

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


class IndexConfig(BaseModel):
    """`tutorloop index`: which pool goes into which store, embedded and clustered how."""

    model_config = ConfigDict(extra="forbid")

    pool: Path
    image_root: Path | None = Field(None, description="image paths are relative to it (default: the pool's folder)")
    store: Path | None = Field(None, description=f"embedded Qdrant folder (default: {DEFAULT_STORE})")
    qdrant_url: str | None = Field(None, description="a Qdrant server instead (default: $QDRANT_URL without --store)")
    collection: str = DEFAULT_COLLECTION
    embedder: str = DEFAULT_EMBEDDER
    clusters: int | str = Field("auto", description="k, or 'auto' (silhouette on a sample)")
    batch_size: int = Field(1024, gt=0, description="records per embed+upsert batch")
    cluster_sample: int = Field(4096, gt=0, description="seeded sample the clusters are fitted on")
    quarantine: Path | None = Field(None, description="JSONL of rejected records (default: beside the store)")
    check_images: bool = True
    seed: int = 0
    progress: bool = True
    ray: str | None = Field(None, description="run read/validate/embed on Ray: 'local' starts a local cluster, "
                            "else the address of a running one (ray://host:10001 or host:6379)")
    ray_actors: int | None = Field(None, ge=1, description="embedder actors (default: one per GPU, else per CPU)")
    semdedup_threshold: float | None = Field(SEMDEDUP_THRESHOLD, gt=0, le=1, description=(
        "near-duplicates within a cluster (text cosine and image thumbnail, retrieval/semdedup.py) above this "
        "are marked dup_of the most central one and never retrieved; null switches it off"))

    @field_validator("clusters", mode="before")
    @classmethod
    def _clusters(cls, value: object) -> object:
        from tutorloop.retrieval.clusters import parse_clusters

        return parse_clusters(str(value))

    @field_validator("semdedup_threshold", mode="before")
    @classmethod
    def _semdedup_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in {"off", "none", "null"} else value

    @model_validator(mode="after")
    def _where(self) -> IndexConfig:
        if self.store is not None and self.qdrant_url is not None:
            raise ValueError("give either --store or --qdrant-url, not both")
        if self.store is None and self.qdrant_url is None:
            # a server named by $QDRANT_URL (as compose.yaml sets it) is used unless --store says otherwise
            self.qdrant_url = os.environ.get("QDRANT_URL") or None
            if self.qdrant_url is None:
                self.store = DEFAULT_STORE
        if self.quarantine is None:
            folder = self.store if self.store is not None else Path.cwd()
            self.quarantine = folder / f"quarantine-{self.collection}.jsonl"
        return self


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


def build_config(config_file: Path | None, overrides: dict[str, Any], kind: type[BaseModel] = RunConfig):
    """``kind`` (RunConfig or IndexConfig) from the file, then the flags given."""
    base = load_config_file(config_file) if config_file else {}
    return kind.model_validate(merge(base, overrides))
