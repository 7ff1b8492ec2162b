"""One call that builds (or reuses) the whole demo world: pool, targets, generic eval set, student.

``build_world`` keeps a ``manifest.json`` in ``out_dir`` with the settings each part was built with;
a part whose settings (and files) are unchanged is reused, any other is rebuilt from scratch, so calling
it twice costs nothing and changing ``pool_size`` rebuilds only the pool.

Layout::

    out_dir/manifest.json
    out_dir/pool/pool.jsonl, pool/images/          the task-agnostic pool (with its mess)
    out_dir/targets/<name>/{val,test}.jsonl, images/
    out_dir/generic/generic.jsonl, images/          the pre-trained skills: forgetting is measured here
    <student_cache>/student-<key>/                  the tiny pre-trained student (demo/student.py)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tutorloop.demo.pool import NoiseConfig, write_clean, write_pool
from tutorloop.demo.targets import TARGETS, write_target
from tutorloop.demo.world import GENERIC_SKILLS, WORLD_VERSION
from tutorloop.retrieval.files import write_json

if TYPE_CHECKING:
    from tutorloop.demo.student import PretrainSettings


class WorldPaths(BaseModel):
    root: Path
    pool: Path
    image_root: Path  # of the pool
    targets: dict[str, tuple[Path, Path]]  # name → (val, test); each file's images lie next to it
    generic: Path
    student: Path | None


def build_world(
    out_dir: Path | str,
    *,
    pool_size: int = 6000,
    seed: int = 0,
    targets: Sequence[str] | None = None,
    n_val: int = 200,
    n_test: int = 500,
    n_generic_per_skill: int = 50,
    noise: NoiseConfig | None = None,
    student_cache: Path | str | None = None,
    student_settings: PretrainSettings | None = None,
    with_student: bool = True,
    progress: bool = True,
) -> WorldPaths:
    """Build what is missing or stale under ``out_dir`` and return the paths of every part.

    The student is cached under ``student_cache`` (default ``out_dir/students``) by its own key
    (seed, world version, pre-training settings); ``with_student=False`` skips it (tests, pool-only use).
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = list(targets or TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown targets {unknown}; known: {sorted(TARGETS)}")
    noise = noise or NoiseConfig()
    manifest_path = root / "manifest.json"
    manifest = _read_manifest(manifest_path)
    base = {"world_version": WORLD_VERSION, "seed": seed}

    pool = root / "pool" / "pool.jsonl"
    _part(manifest_path, manifest, "pool", {**base, "n": pool_size, "noise": noise.model_dump()}, pool,
          lambda: write_pool(pool.parent, pool_size, seed, noise=noise, progress=progress))
    generic = root / "generic" / "generic.jsonl"
    _part(manifest_path, manifest, "generic", {**base, "n_per_skill": n_generic_per_skill, "skills": list(GENERIC_SKILLS)},
          generic, lambda: write_clean(generic, GENERIC_SKILLS, n_generic_per_skill, seed + 1))
    target_paths = {}
    for name in names:
        folder = root / "targets" / name
        val, test = folder / "val.jsonl", folder / "test.jsonl"
        _part(manifest_path, manifest, f"target:{name}", {**base, "n_val": n_val, "n_test": n_test}, test,
              lambda name=name: write_target(name, root / "targets", seed + 2, n_val=n_val, n_test=n_test),
              also=val)
        target_paths[name] = (val, test)

    student = None
    if with_student:
        from tutorloop.demo.student import build_student  # torch is imported only when a student is wanted

        student = build_student(Path(student_cache) if student_cache else root / "students", seed=seed,
                                settings=student_settings, progress=progress)
    return WorldPaths(root=root, pool=pool, image_root=pool.parent, targets=target_paths, generic=generic,
                      student=student)


def _part(manifest_path: Path, manifest: dict, key: str, settings: dict, path: Path, build: Callable[[], object],
          also: Path | None = None) -> None:
    """Rebuild ``path``'s folder unless the manifest says it was built with these settings."""
    done = manifest.get(key) == settings and path.is_file() and (also is None or also.is_file())
    if done:
        return
    manifest.pop(key, None)
    if path.parent.exists():
        shutil.rmtree(path.parent)  # stale images of another size or seed must not linger
    _write_manifest(manifest_path, manifest)  # a crash mid-build leaves the part marked stale
    build()
    manifest[key] = settings
    _write_manifest(manifest_path, manifest)


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a torn manifest only costs a rebuild


def _write_manifest(path: Path, manifest: dict) -> None:
    write_json(path, manifest, sort_keys=True)
