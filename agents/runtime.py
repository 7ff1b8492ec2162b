"""What the loop's nodes share besides the graph state: the config, the run directory and the
external services (pool index, query embedder, student), opened lazily and once.

The embedded store admits one process at a time, so a run holds it only while it reads it (the probe, the
plan, the selection, the anchors' draw) and releases it before training and evaluation: several runs share
one index, each waiting its turn when another holds it.

Injecting these (rather than building them inside nodes) is what lets tests hand the loop a tiny
student, an embedded Qdrant and a scripted teacher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutorloop.agents.config import RunConfig
from tutorloop.agents.run_dir import RunDir
from tutorloop.retrieval.embed import load_embedder
from tutorloop.retrieval.index import PoolIndex
from tutorloop.training.student import Student, load_student

log = logging.getLogger(__name__)
STORE_WAIT_S = 3600.0  # another run's plan and selection take minutes, not hours


@dataclass
class Runtime:
    config: RunConfig
    run_dir: RunDir
    index: PoolIndex | None = None
    embedder: Any = None
    _student: tuple[Path | None, Student] | None = field(default=None, repr=False)
    _image_root: Path | None = field(default=None, repr=False)

    def pool_index(self) -> PoolIndex:
        if self.index is None:
            self.index = self._open_index()
        return self.index

    def _open_index(self) -> PoolIndex:
        """Open the pool index; an embedded store held by another run is waited for (said once)."""
        return PoolIndex.open_when_free(STORE_WAIT_S, store=self.config.store, url=self.config.qdrant_url,
                                        collection=self.config.collection)

    def release_index(self) -> None:
        """Let another run use the embedded store (a server index stays open: it is shared anyway)."""
        if self.index is not None and self.config.store is not None:
            self._image_root = self._image_root or Path(self.index.manifest.image_root)
            self.index.close()
            self.index = None

    def query_embedder(self) -> Any:
        """The embedder the index was built with (recorded in its manifest), so queries match it."""
        if self.embedder is None:
            self.embedder = load_embedder(self.pool_index().manifest.embedder)
        return self.embedder

    @property
    def pool_image_root(self) -> Path:
        if self._image_root is None:
            self._image_root = Path(self.pool_index().manifest.image_root)
        return self._image_root

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
