"""What the loop's nodes share besides the graph state: the config, the run directory and the
external services (index, embedder, student, teacher), opened lazily and once.

Injecting these (rather than building them inside nodes) is what lets tests hand the loop a tiny
student, a local Qdrant and a scripted teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.config import RunConfig
from agents.run_dir import RunDir
from retrieval.embed import load_embedder
from retrieval.index import PoolIndex
from training.student import Student, load_student


@dataclass
class Runtime:
    config: RunConfig
    run_dir: RunDir
    index: PoolIndex | None = None
    embedder: Any = None
    _student: tuple[tuple, Student] | None = field(default=None, repr=False)

    def pool_index(self) -> PoolIndex:
        if self.index is None:
            self.index = PoolIndex.open(
                store=self.config.store, url=self.config.qdrant_url, collection=self.config.collection
            )
        return self.index

    def query_embedder(self) -> Any:
        """The embedder the index was built with (recorded in its manifest), so queries match it."""
        if self.embedder is None:
            self.embedder = load_embedder(self.pool_index().manifest.embedder)
        return self.embedder

    @property
    def pool_image_root(self) -> Path:
        return Path(self.pool_index().manifest.image_root)

    def student(self, adapter: Path | None, *, trainable: bool = False) -> Student:
        """The student with the adapter of a round; the last one loaded is kept for the next node."""
        key = (adapter, trainable)
        if self._student is None or self._student[0] != key or trainable:
            self._student = None  # free the old model before loading the next
            self._student = (key, load_student(self.config.student, adapter=adapter, is_trainable=trainable))
        return self._student[1]

    def adapter_of(self, round_number: int) -> Path | None:
        """The adapter the student carries after ``round_number`` rounds (None before the first)."""
        return None if round_number == 0 else self.run_dir.round(round_number) / "adapter"

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
