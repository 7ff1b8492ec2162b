"""The pool's skill map: fine clusters of the pool, each named by the teacher; diagnoses choose from it.

Building (``tutorloop skills``, `build_skill_map`):
1. the pool's vectors (read back from the index) are clustered finely with MiniBatchKMeans, k =
   ``fine_k(N)`` = clamp(round(sqrt(N / 2)), 32, 1024): about sqrt(N/2) points per cluster, so the
   number of teacher calls grows like the square root of the pool (6k points: 55 calls, 1M: 707), and a
   cluster is small enough to hold one skill. Every point's payload gets its ``skill_cluster``.
2. per cluster the teacher sees a handful of samples — the ``near`` nearest its centroid and ``spread``
   more drawn at random (seeded), with their images when the teacher takes images — and names the skill
   (kebab-case name, a one-line description, a capability category): k calls per pool, in flight
   together, each reply cached (the teacher's reply cache), so a killed build resumes where it stopped
   and a rebuild with the same clusters costs nothing. Their cost is the pool's, paid once, and is
   recorded in the map (benchmarks charge it per run, amortised).
3. clusters named alike (the same content words in the same order, spelling and inflection aside:
   planning.skill_key)
   are merged into one skill; the map is written to ``skills.json`` beside the index (readable, and
   editable by a person), and each point's payload gets its ``skill`` (set by filter on
   ``skill_cluster``; payload index on both fields).

A pool that tags its samples (``source``, a dataset or task key) can be named by that tag instead
(``names_from``, ``tutorloop skills --names-from source``): each cluster takes its points' most common tag,
no teacher call. The clusters, merging, payload and grounding are the same.

A hand edit is respected: the digest of the map last applied to the payload is kept beside it
(``skills.applied``); a map whose text differs (renamed skills, clusters moved between skills, skills
given the same name to merge them) is validated and applied again before it is used.

Grounding (`MapGrounding`): for a failure, the map's skills nearest to it — ranked by the payload skills
of its nearest pool samples, then by the similarity of the skill's description — are the choices of its
grounded diagnosis (agents/teacher.py: an enum of their names).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tutorloop.agents.planning import skill_key
from tutorloop.agents.records import skill_name
from tutorloop.agents.teacher import (
    SkillChoice,
    StructuredRequest,
    TeacherClient,
    image_note,
    parse_model,
    png_data_url,
    run_sync,
)
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.prompts.render import data_tag, render
from tutorloop.retrieval.embed import embed_texts
from tutorloop.retrieval.files import atomic_write_text
from tutorloop.retrieval.records import Sample, strip_image_tag
from tutorloop.training.records import EvalRecord

log = logging.getLogger(__name__)

FINE_MIN, FINE_MAX = 32, 1024
K_RULE = "clamp(round(sqrt(N / 2)), 32, 1024), at most N / 2"
MAP_FORMAT = 1
FIT_SAMPLE = 20_000  # k-means is fitted on at most this many vectors, then assigns all of them
Category = Literal["perception", "spatial", "counting", "comparison", "reasoning", "knowledge", "text", "other"]


def fine_k(n_points: int) -> int:
    """Clusters of the skill map for a pool of ``n_points`` (never more than half the points)."""
    if n_points < 2:
        return 1
    k = min(FINE_MAX, max(FINE_MIN, round(math.sqrt(n_points / 2))))
    return max(1, min(k, n_points // 2))


# --- the records --------------------------------------------------------------------------------------


class ClusterName(BaseModel):
    """The teacher's reply for one cluster."""

    model_config = ConfigDict(extra="forbid", title="SkillName")

    name: str = Field(description="kebab-case skill name, at most 6 words", min_length=1, max_length=80)
    description: str = Field(description="one line: what a sample of the skill asks and answers",
                             min_length=1, max_length=300)
    category: Category = Field(description="capability category")

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        return skill_name(value, "name")


SKILL_NAME_SCHEMA: dict[str, Any] = ClusterName.model_json_schema()


class MapSkill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    category: str = "other"
    clusters: list[int] = Field(description="the fine clusters (payload skill_cluster) this skill is made of")
    size: int = Field(0, description="pool points in those clusters")
    examples: list[str] = Field(default_factory=list, description="questions of its clusters, for a reader")

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        return skill_name(value, "skill name")


class MapCost(BaseModel):
    """What naming the clusters cost: paid once per pool (a rebuild from the cache pays nothing)."""

    clusters: int = 0
    requests: int = Field(0, description="chat completions sent (retries included)")
    cached: int = Field(0, description="clusters named from the reply cache")
    rejected: int = 0
    tokens: dict[str, int] = Field(default_factory=dict)
    seconds: float = Field(0.0, description="wall-clock of the naming calls")
    cluster_seconds: float = Field(0.0, description="reading vectors, k-means, setting payloads")


class SkillMap(BaseModel):
    """``skills.json``: the pool's skills, each a set of fine clusters with the teacher's name for it."""

    model_config = ConfigDict(extra="forbid")

    format: int = MAP_FORMAT
    collection: str
    points: int = Field(description="points in the index when the map was built")
    k: int = Field(description="fine clusters")
    k_rule: str = K_RULE
    seed: int = 0
    teacher: dict[str, Any] = Field(default_factory=dict, description="model and endpoint that named the clusters")
    skills: list[MapSkill]
    unnamed: dict[int, str] = Field(default_factory=dict, description="clusters the teacher could not name, "
                                    "with the reason: their points carry no skill (a rebuild asks again)")
    cost: MapCost = Field(default_factory=MapCost)

    def by_name(self) -> dict[str, MapSkill]:
        return {s.name: s for s in self.skills}

    def skill_of_cluster(self) -> dict[int, str]:
        return {c: s.name for s in self.skills for c in s.clusters}


class SkillMapError(ValueError):
    """A skills.json that cannot be used as it is (say which file and what)."""


# --- where the map lives -----------------------------------------------------------------------------


def map_path(store: Path | None, collection: str, *, qdrant_url: str | None = None) -> Path:
    """``skills.json`` beside the embedded index (``<collection>.skills.json`` for another collection);
    for a server, ``.tutorloop/skills-<collection>.json`` in the working folder."""
    from tutorloop.retrieval.defaults import DEFAULT_COLLECTION

    if store is None:
        return Path(".tutorloop") / f"skills-{collection}.json"
    return Path(store) / ("skills.json" if collection == DEFAULT_COLLECTION else f"{collection}.skills.json")


def applied_path(path: Path) -> Path:
    return path.with_suffix(".applied")


def cache_path(path: Path) -> Path:
    return path.with_name(path.stem + "_cache")


def load_skill_map(path: Path) -> SkillMap:
    """Read and check a map (a person may have edited it): same-named skills are merged, and a cluster
    may belong to one skill only."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SkillMapError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from error
    try:
        skill_map = SkillMap.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise SkillMapError(f"{path}: not a skill map: {problems}") from error
    owner: dict[int, str] = {}
    for skill in skill_map.skills:
        for cluster in skill.clusters:
            if owner.setdefault(cluster, skill.name) != skill.name:
                raise SkillMapError(f"{path}: cluster {cluster} belongs to both {owner[cluster]!r} and "
                                    f"{skill.name!r}; a cluster may belong to one skill only")
    return skill_map.model_copy(update={"skills": merge_same_names(skill_map.skills)})


def merge_same_names(skills: Sequence[MapSkill]) -> list[MapSkill]:
    """Skills of the same name become one (a person merges two skills by giving them one name)."""
    merged: dict[str, MapSkill] = {}
    for skill in skills:
        known = merged.get(skill.name)
        if known is None:
            merged[skill.name] = skill.model_copy(deep=True)
        else:
            known.clusters = sorted({*known.clusters, *skill.clusters})
            known.size += skill.size
            known.examples = list(dict.fromkeys([*known.examples, *skill.examples]))[:6]
    return list(merged.values())


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- building ----------------------------------------------------------------------------------------


@dataclass
class ClusterSamples:
    cluster: int
    size: int
    shown: list[Sample]


def assign_fine_clusters(index: Any, k: int | None = None, *, seed: int = 0, near: int = 4, spread: int = 2,
                         fit_sample: int = FIT_SAMPLE) -> tuple[int, int, dict[int, list[str]], dict[int, list[str]]]:
    """Fit k-means on the index's vectors, write each point's ``skill_cluster``; returns (k, points,
    ids per cluster, the ids to show per cluster: the ``near`` nearest the centroid + ``spread`` at random)."""
    from tutorloop.retrieval.clusters import fit_clusters

    rng = random.Random(seed)
    sample: list[np.ndarray] = []
    seen = 0
    for _, vectors in index.vectors():  # pass 1: a seeded uniform sample (Algorithm R) to fit on
        for vector in vectors:
            seen += 1
            slot = seen - 1 if seen <= fit_sample else rng.randrange(seen)
            if slot < fit_sample:
                if slot == len(sample):
                    sample.append(vector)
                else:
                    sample[slot] = vector
    if seen == 0:
        raise SkillMapError("the index holds no points: run `tutorloop index` first")
    k = k or fine_k(seen)
    fit = fit_clusters(np.asarray(sample), k, seed=seed)
    members: dict[int, list[str]] = defaultdict(list)
    nearest: dict[int, list[tuple[float, str]]] = defaultdict(list)  # max-heap by distance (negated)
    centroids = fit.model.cluster_centers_ if fit.model is not None else np.zeros((1, sample[0].shape[0]))
    for ids, vectors in index.vectors():  # pass 2: assign every point, keep the nearest per cluster
        labels = fit.assign(vectors)
        distances = np.linalg.norm(vectors - centroids[labels], axis=1)
        for sample_id, label, distance in zip(ids, labels.tolist(), distances.tolist(), strict=True):
            members[label].append(sample_id)
            heap = nearest[label]
            if len(heap) < near:
                heapq.heappush(heap, (-distance, sample_id))
            elif -distance > heap[0][0]:
                heapq.heapreplace(heap, (-distance, sample_id))
    for label, ids in members.items():
        index.set_payload(ids, {"skill_cluster": int(label)})
    shown: dict[int, list[str]] = {}
    for label in sorted(members):
        close = [sid for _, sid in sorted(nearest[label], key=lambda t: (-t[0], t[1]))]
        rest = sorted(set(members[label]) - set(close))
        shown[label] = close + random.Random(f"{seed}:{label}").sample(rest, min(spread, len(rest)))
    return fit.k, seen, dict(members), shown


def naming_request(cluster: ClusterSamples, image_root: Path, *, send_images: bool) -> StructuredRequest:
    """The chat request that asks the teacher to name one cluster."""
    blocks = []
    for i, sample in enumerate(cluster.shown, 1):
        blocks.append(f"Sample {i}\nquestion: {sample.question}\nanswer: {sample.reference}")
    samples = "\n\n".join(blocks)
    urls: list[str] = []
    if send_images:
        for sample in cluster.shown:
            if sample.images:
                try:
                    urls.append(png_data_url(image_root, sample.images[0]))
                except (OSError, ValueError) as error:
                    log.info("skills: image of %s not sent: %s", sample.id, error)
    note = (f"The first image of each sample is attached, in order ({len(urls)})." if urls
            else image_note(0))
    user = render("skill_name_user", n=len(cluster.shown), size=cluster.size, image_note=note,
                  tag=data_tag(samples), samples=samples)
    content: str | list[dict] = user
    if urls:
        content = [*({"type": "image_url", "image_url": {"url": u}} for u in urls), {"type": "text", "text": user}]
    messages = [{"role": "system", "content": render("skill_name_system")}, {"role": "user", "content": content}]
    return StructuredRequest(messages, SKILL_NAME_SCHEMA, lambda text: parse_model(text, ClusterName, "skill name"),
                             name="skill_name")


async def _name_all(clusters: list[ClusterSamples], image_root: Path, config: TeacherConfig):
    import asyncio

    async with TeacherClient(config) as client:
        requests = [naming_request(c, image_root, send_images=config.send_images) for c in clusters]
        replies = await asyncio.gather(*(client.ask(r, label=f"cluster {c.cluster}")
                                         for r, c in zip(requests, clusters, strict=True)))
        return replies, client.http_requests, dict(client.tokens)


def annotation_names(index: Any, members: dict[int, list[str]], field: str) -> tuple[dict[int, ClusterName], dict[int, str]]:
    """Each cluster named by the most common value of the samples' own ``field`` (``source``, or an extra
    key of the record such as a dataset or task tag) among its points — no teacher call. Many instruction
    pools carry such a tag (the dataset a sample came from); the error-driven data-selection work
    retrieved by it. A cluster none of whose points has the field stays unnamed."""
    named: dict[int, ClusterName] = {}
    unnamed: dict[int, str] = {}
    for cluster, ids in sorted(members.items()):
        tagged = [(str(v), s.question) for s in index.fetch(ids) if (v := _annotation(s, field)) not in (None, "")]
        if not tagged:
            unnamed[cluster] = f"no point of the cluster has {field!r}"
            continue
        values = Counter(v for v, _ in tagged)
        value, count = max(values.items(), key=lambda kv: (kv[1], kv[0]))
        example = next(strip_image_tag(q) for v, q in tagged if v == value)
        description = f"samples the pool tags {field}={value!r}, e.g. {example!r}"[:300]
        try:
            named[cluster] = ClusterName(name=value, category="other", description=description)
        except ValidationError as error:
            unnamed[cluster] = f"{field} {value!r} is not a skill name: {error.errors()[0]['msg']}"
    return named, unnamed


def _annotation(sample: Sample, field: str) -> Any:
    return getattr(sample, field, None) if field in Sample.model_fields else (sample.model_extra or {}).get(field)


def merge_named(named: dict[int, ClusterName], sizes: dict[int, int], examples: dict[int, list[str]]) -> list[MapSkill]:
    """Clusters named alike (planning.skill_key) become one skill; its name is the
    most used spelling (ties: the largest cluster's), its description the largest cluster's."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for cluster, name in sorted(named.items()):
        groups[skill_key(name.name)].append(cluster)
    skills = []
    for clusters in groups.values():
        by_size = sorted(clusters, key=lambda c: (-sizes[c], c))
        spelled = Counter(named[c].name for c in clusters)
        rank = {n: min(by_size.index(c) for c in clusters if named[c].name == n) for n in spelled}
        name = max(spelled, key=lambda n: (spelled[n], -rank[n]))
        head = named[by_size[0]]
        skills.append(MapSkill(name=name, description=head.description, category=head.category,
                               clusters=sorted(clusters), size=sum(sizes[c] for c in clusters),
                               examples=list(dict.fromkeys(q for c in by_size for q in examples[c]))[:6]))
    skills = merge_same_names(skills)  # two token groups can still normalise to one spelling
    return sorted(skills, key=lambda s: (-s.size, s.name))


def build_skill_map(index: Any, teacher: TeacherConfig | None, path: Path, *, k: int | None = None, seed: int = 0,
                    near: int = 4, spread: int = 2, collection: str = "pool", names_from: str | None = None) -> SkillMap:
    """Cluster, name, merge, write ``path`` and set every point's ``skill`` (see the module docstring).

    ``names_from``: name each cluster by the pool's own annotation of that name (e.g. ``source``) instead
    of asking ``teacher`` (`annotation_names`)."""
    if teacher is None and names_from is None:
        raise ValueError("build_skill_map needs a teacher or names_from")
    start = time.perf_counter()
    manifest = index.manifest
    image_root = Path(manifest.image_root)
    k, points, members, shown_ids = assign_fine_clusters(index, k, seed=seed, near=near, spread=spread)
    clusters = [ClusterSamples(c, len(members[c]), index.fetch(ids)) for c, ids in shown_ids.items()]
    cluster_s = time.perf_counter() - start
    t = time.perf_counter()
    if names_from:
        named, unnamed = annotation_names(index, members, names_from)
        requests, cached, tokens, named_by = 0, 0, {}, {"names_from": names_from}
    else:
        config = teacher if teacher.cache_dir else teacher.model_copy(update={"cache_dir": cache_path(path)})
        replies, requests, tokens = run_sync(_name_all(clusters, image_root, config))
        named = {c.cluster: r.value for c, r in zip(clusters, replies, strict=True) if r.value is not None}
        unnamed = {c.cluster: (r.error or "no reply")[:300] for c, r in zip(clusters, replies, strict=True)
                   if r.value is None}
        cached = sum(r.cached for r in replies)
        named_by = {"model": teacher.model, "base_url": teacher.base_url, "send_images": teacher.send_images}
    examples = {c.cluster: [s.question for s in c.shown[:3]] for c in clusters}
    skills = merge_named(named, {c.cluster: c.size for c in clusters}, examples)
    cost = MapCost(clusters=len(clusters), requests=requests, cached=cached,
                   rejected=len(unnamed), tokens=tokens, seconds=round(time.perf_counter() - t, 3),
                   cluster_seconds=round(cluster_s, 3))
    skill_map = SkillMap(collection=collection, points=points, k=k, seed=seed, skills=skills, unnamed=unnamed,
                         teacher=named_by, cost=cost)
    write_skill_map(skill_map, path)
    apply_skill_map(index, skill_map, path)
    log.info("skill map: %d clusters -> %d skills (%d unnamed), %d requests (%d cached) in %.1f s: %s",
             len(clusters), len(skills), len(unnamed), requests, cost.cached, cost.seconds, path)
    return skill_map


def write_skill_map(skill_map: SkillMap, path: Path) -> None:
    atomic_write_text(path, skill_map.model_dump_json(indent=2) + "\n")


def apply_skill_map(index: Any, skill_map: SkillMap, path: Path) -> None:
    """Every point's payload ``skill`` from the map (by filter on ``skill_cluster``); unnamed clusters'
    points get none. Records the applied file's digest beside it."""
    for skill in skill_map.skills:
        index.set_payload_where("skill_cluster", skill.clusters, {"skill": skill.name})
    owned = {c for s in skill_map.skills for c in s.clusters}
    orphans = [c for c in range(skill_map.k) if c not in owned]
    if orphans:
        index.set_payload_where("skill_cluster", orphans, {"skill": None})
    if hasattr(index, "flush"):
        index.flush()
    atomic_write_text(applied_path(path), file_digest(path) + "\n")


def is_applied(path: Path) -> bool:
    marker = applied_path(path)
    return marker.is_file() and marker.read_text().strip() == file_digest(path)


@dataclass
class MapStatus:
    """Whether a run grounds its diagnoses in a map, and why (logged, and recorded in run.json)."""

    path: str | None
    used: bool
    reason: str
    skills: int = 0

    def as_dict(self) -> dict:
        return {"path": self.path, "used": self.used, "reason": self.reason, "skills": self.skills}


def resolve_map(setting: str, store: Path | None, collection: str, qdrant_url: str | None = None) -> tuple[Path | None, str]:
    """The map file a teacher setting points at (None: off), and why."""
    if setting == "off":
        return None, "skill map switched off (teacher.skill_map: off)"
    if setting == "auto":
        return map_path(store, collection, qdrant_url=qdrant_url), "beside the index"
    return Path(setting), "given (teacher.skill_map)"


def open_map(setting: str, index: Any, store: Path | None, collection: str,
             qdrant_url: str | None = None) -> tuple[SkillMap | None, MapStatus]:
    """The map to ground diagnoses in, applied to the payload if it was edited since; or None and why."""
    path, why = resolve_map(setting, store, collection, qdrant_url)
    if path is None:
        return None, MapStatus(None, False, why)
    if not path.is_file():
        if setting != "auto":
            raise SkillMapError(f"teacher.skill_map: {path} does not exist")
        return None, MapStatus(str(path), False, f"no skill map at {path} (build one with `tutorloop skills`): "
                                                 "free diagnoses")
    skill_map = load_skill_map(path)
    if not is_applied(path):
        log.info("skill map %s changed since it was applied to the index (a hand edit?): applying it", path)
        apply_skill_map(index, skill_map, path)
    labelled = index.count_with("skill")
    if labelled == 0:
        return None, MapStatus(str(path), False, f"{path} exists but no point of the index carries a skill "
                                                 "(re-indexed since?): run `tutorloop skills --rebuild`")
    return skill_map, MapStatus(str(path), True, f"{len(skill_map.skills)} skills, {labelled} of "
                                                 f"{index.count()} points labelled", len(skill_map.skills))


def map_status(setting: str, store: Path | None, collection: str, qdrant_url: str | None = None) -> dict:
    """Whether a map would be used, without opening the index (for run.json at the start of a run)."""
    path, why = resolve_map(setting, store, collection, qdrant_url)
    if path is None:
        return MapStatus(None, False, why).as_dict()
    if not path.is_file():
        return MapStatus(str(path), False, f"no skill map at {path}: free diagnoses").as_dict()
    try:
        skill_map = load_skill_map(path)
    except SkillMapError as error:
        return MapStatus(str(path), False, str(error)).as_dict()
    return MapStatus(str(path), True, why, len(skill_map.skills)).as_dict()


# --- grounding a diagnosis ---------------------------------------------------------------------------


class MapGrounding:
    """The map's skills nearest to each failure: first those of its nearest pool samples (their payload
    ``skill``, weighted by similarity), then the rest by how close the skill's text is to the question."""

    def __init__(self, skill_map: SkillMap, index: Any, embedder: Any, *, shown: int = 24, probe: int = 64) -> None:
        self.skills = skill_map.by_name()
        self.index, self.embedder, self.shown, self.probe = index, embedder, shown, probe
        texts = [f"{s.name.replace('-', ' ')}: {s.description} {' '.join(s.examples[:2])}" for s in self.skills.values()]
        self.names = list(self.skills)
        self.vectors = embed_texts(embedder, texts) if texts else np.zeros((0, 1))

    def choices_for(self, records: Sequence[EvalRecord]) -> dict[str, list[SkillChoice]]:
        if not records or not self.names:
            return {r.id: [] for r in records}
        questions = [strip_image_tag(r.question) for r in records]
        vectors = embed_texts(self.embedder, questions)
        return {r.id: self._choices(v) for r, v in zip(records, vectors, strict=True)}

    def _choices(self, vector: np.ndarray) -> list[SkillChoice]:
        votes: Counter[str] = Counter()
        for hit in self.index.query(vector, self.probe, with_vectors=False):
            skill = (hit.payload or {}).get("skill")
            if skill in self.skills:
                votes[skill] += max(hit.score, 0.0)
        by_text = self.vectors @ np.asarray(vector, dtype=np.float32)
        order = sorted(range(len(self.names)), key=lambda i: (-votes[self.names[i]], -by_text[i], self.names[i]))
        return [SkillChoice(self.names[i], self.skills[self.names[i]].description, self.skills[self.names[i]].category)
                for i in order[: self.shown]]


__all__ = ["ClusterName", "MapGrounding", "MapSkill", "MapStatus", "SkillMap", "SkillMapError",
           "apply_skill_map", "build_skill_map", "fine_k", "load_skill_map", "map_path", "map_status", "open_map"]
