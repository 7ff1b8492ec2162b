"""`rds`: RDS+ (Ivison et al., 2025) for a VLM student — the pool samples the student itself finds most like
each failure, taken round-robin over the failures.

Every pool sample is represented by the untouched student's last-layer hidden states over its whole
conversation (training/representations.py). Those vectors are a collection of their own in the pool's store,
named by the student (``<collection>-student-<key>``): computed once per student, in batches that a killed
run resumes, and reused by every later run of that student. A round represents its failures the same way,
then each failure in turn takes its most similar sample not chosen yet, until the gap's share is spent.
Failures are grouped into gaps by source, as `failures` does.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutorloop.agents.planning import Gap, GapPlan
from tutorloop.agents.selectors.base import Choice, RoundContext, Selector
from tutorloop.agents.selectors.failures import plan as plan_by_source
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import ScoredCandidate

if TYPE_CHECKING:
    from tutorloop.retrieval.index import PoolIndex
    from tutorloop.training.student import Student

log = logging.getLogger(__name__)
_FILL_BATCH = 256  # pool samples represented, then written, at a time (the unit a killed run resumes from)


def student_key(student: Path | str) -> str:
    """Which student a vector belongs to: its folder's config and the names and sizes of its weights, or a
    hub id as given."""
    path = Path(student)
    digest = hashlib.sha256(str(student).encode() if not path.is_dir() else b"")
    if path.is_dir():
        for file in sorted(path.iterdir()):
            if file.suffix == ".json" and file.name.startswith("config"):
                digest.update(file.read_bytes())
            elif file.suffix in {".safetensors", ".bin"}:
                digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def space_name(collection: str, student: Path | str) -> str:
    return f"{collection}-student-{student_key(student)}"


def student_space(ctx: RoundContext) -> PoolIndex:
    """The collection of the student's vectors of every retrievable pool sample, filled where it is not yet."""
    from tqdm.auto import tqdm

    from tutorloop.retrieval.index import IndexManifest, PoolIndex
    from tutorloop.training.representations import hidden_state_vectors
    from tutorloop.training.student import untouched

    config, pool = ctx.config, ctx.services.pool_index()
    key = student_key(config.student)
    wanted = f"student:{key}"
    space = PoolIndex.open(store=config.store, url=config.qdrant_url, collection=space_name(config.collection,
                                                                                            config.student))
    manifest = space.read_manifest()
    if manifest is not None:
        if manifest.embedder != wanted:
            space.close()
            raise ValueError(f"collection {space.collection} holds vectors of {manifest.embedder}, not of the "
                             f"student {config.student} ({wanted}); delete that collection to compute them again")
        return space
    ids = pool.all_ids()
    done = set(space.all_ids()) if space.exists() else set()
    todo = [i for i in ids if i not in done]
    if done:
        log.info("rds: resuming the student's vectors of the pool: %d of %d done", len(done), len(ids))
    clusters = {p["sample_id"]: p.get("cluster") for p in pool.payloads(["sample_id", "cluster"])}
    dim = None
    # TQDM_DISABLE=1 silences the bar, as every bar of the loop
    with untouched(ctx.student()) as base, tqdm(total=len(todo), desc="rds: student vectors of the pool",
                                                unit="sample") as bar:
        for start in range(0, len(todo), _FILL_BATCH):
            samples = pool.fetch(todo[start:start + _FILL_BATCH])
            vectors = hidden_state_vectors(base, samples, ctx.services.pool_image_root,
                                           batch_size=config.eval_batch_size)
            dim = vectors.shape[1]
            if not space.exists():
                space.prepare(dim, wanted)
            space.upsert(samples, vectors, [clusters.get(s.id) or 0 for s in samples], run="student")
            bar.update(len(samples))
    if dim is None:  # every vector was written before a kill: read the size off one of them
        dim = next(iter(space.vectors(batch=1)))[1].shape[1]
    made = pool.manifest
    space.write_manifest(IndexManifest(pool=made.pool, image_root=made.image_root, embedder=wanted, dim=dim,
                                       text="student hidden states", clusters=made.clusters, count=len(ids)))
    return space


def failure_samples(ctx: RoundContext, plan: GapPlan) -> dict[str, list[Sample]]:
    """Each gap's failed validation samples (with their reference answers), by gap name."""
    from tutorloop.retrieval.ingest import load_samples

    config = ctx.config
    val = {s.id: s for s in load_samples(config.val, config.image_root_of(config.val), check_images=False)}
    return {gap.skill: [val[i] for i in gap.sample_ids if i in val] for gap in plan.gaps}


class _Nearest:
    """One failure's pool samples, most similar first, asked from the index a page at a time."""

    def __init__(self, space: PoolIndex, vector: Any, page: int, exclude: frozenset[str]) -> None:
        self.space, self.vector, self.page, self.exclude = space, vector, page, exclude

    def __iter__(self) -> Iterator[tuple[str, float]]:
        seen = 0
        while True:
            hits = self.space.query(self.vector, seen + self.page, self.exclude, with_vectors=False)
            yield from ((h.sample_id, h.score) for h in hits[seen:])
            if len(hits) < seen + self.page:
                return
            seen = len(hits)
            self.page *= 2


def round_robin(nearest: dict[str, Iterator[tuple[str, float]]], share: int, taken: set[str]
                ) -> list[tuple[str, str, float, int]]:
    """(sample, failure, cosine, turn): each failure in turn takes its best sample not taken, until ``share``."""
    picks: list[tuple[str, str, float, int]] = []
    live = dict(nearest)
    turn = 0
    while len(picks) < share and live:
        turn += 1
        for failure, ranked in list(live.items()):
            if len(picks) >= share:
                break
            for sample_id, cosine in ranked:
                if sample_id not in taken:
                    taken.add(sample_id)
                    picks.append((sample_id, failure, cosine, turn))
                    break
            else:
                del live[failure]
    return picks


def choose(ctx: RoundContext, plan: GapPlan) -> Choice:
    from tutorloop.training.student import untouched

    with ctx.clock("student_space"):
        space = student_space(ctx)
    try:
        with ctx.clock("rds"):
            by_gap = failure_samples(ctx, plan)
            taken: set[str] = set()
            scored: list[ScoredCandidate] = []
            with untouched(ctx.student()) as base:
                for gap in sorted(plan.gaps, key=lambda g: (-g.budget, g.skill)):
                    scored += _gap_choice(gap, by_gap[gap.skill], base, space, ctx, taken)
    finally:
        space.close()
    log.info("rds: %d samples chosen for %d gap(s)", len(scored), len(plan.gaps))
    return Choice(scored=scored)


def _gap_choice(gap: Gap, failed: Sequence[Sample], base: Student, space: PoolIndex, ctx: RoundContext,
                taken: set[str]) -> list[ScoredCandidate]:
    """The gap's share, round-robin over its failures' nearest samples in the student's space."""
    from tutorloop.training.representations import hidden_state_vectors

    if not failed or gap.budget <= 0:
        return []
    vectors = hidden_state_vectors(base, failed, ctx.config.image_root_of(ctx.config.val),
                                   batch_size=ctx.config.eval_batch_size)
    page = math.ceil(gap.budget / len(failed)) + 8
    nearest = {s.id: iter(_Nearest(space, v, page, ctx.exclude)) for s, v in zip(failed, vectors, strict=True)}
    return [ScoredCandidate(
        sample_id=sample_id, gap=gap.skill, query=failure, relevance=cosine, score=cosine, selected=True,
        reason=f"rds: turn {turn} of failure {failure}: the most similar sample left in the student's space "
               f"(cosine {cosine:.3f})")
        for sample_id, failure, cosine, turn in round_robin(nearest, gap.budget, taken)]


SELECTOR = Selector(
    name="rds", plan=plan_by_source, choose=choose,
    help="RDS+: no teacher; the pool samples most like each failure in the student's own hidden states "
         "(computed once per student into the store), round-robin over the failures")
