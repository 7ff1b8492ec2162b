"""What the loop's nodes share besides the graph state: the config, the run directory and the
external services (pool index, query embedder, student), opened lazily and once.

Injecting these (rather than building them inside nodes) is what lets tests hand the loop a tiny
student, an embedded Qdrant and a scripted teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutorloop.agents.config import RunConfig
from tutorloop.agents.run_dir import RunDir
from tutorloop.retrieval.embed import load_embedder
from tutorloop.retrieval.index import PoolIndex
from tutorloop.training.student import Student, load_student


@dataclass
class Runtime:
    config: RunConfig
    run_dir: RunDir
    index: PoolIndex | None = None
    embedder: Any = None
    _student: tuple[Path | None, Student] | None = field(default=None, repr=False)

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

    def student(self, adapter: Path | None) -> Student:
        """The student (for inference) with a round's adapter; the last one loaded is kept for the next node."""
        if self._student is None or self._student[0] != adapter:
            self._student = None  # free the old model before loading the next
            self._student = (adapter, load_student(self.config.student, adapter=adapter))
        return self._student[1]

    def trainable_student(self, adapter: Path | None) -> Student:
        """A fresh trainable copy; not kept, since training changes it (the cache is freed for its memory)."""
        self._student = None
        return load_student(self.config.student, adapter=adapter, is_trainable=True)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
