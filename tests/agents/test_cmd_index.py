"""`tutorloop index` end to end through the CLI entry point, on a pool with every kind of bad record."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tutorloop.agents.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _record(sample_id: str, image: str | None = "images/ok.png", question: str = "How many circles?") -> dict:
    rec = {"id": sample_id, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                              {"from": "gpt", "value": "2"}]}
    if image is not None:
        rec["image"] = image
    return rec


def _bad_pool(tmp_path: Path) -> Path:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (8, 8), "green").save(root / "images" / "ok.png")
    Image.new("RGB", (8, 8), "green").save(outside / "secret.png")
    (root / "images" / "junk.png").write_bytes(b"junk")
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    bomb = bytearray((root / "images" / "ok.png").read_bytes())
    bomb[16:24] = struct.pack(">II", 90_000, 90_000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])) & 0xFFFFFFFF)
    (root / "images" / "bomb.png").write_bytes(bytes(bomb))
    rows = [_record(f"ok-{i}", question=q) for i, q in enumerate(
        ["How many circles?", "What colour is the square?", "Is the star above the moon?", "Read the sign."])]
    rows += [
        "{not json",
        {"id": "half", "conversations": [{"from": "human", "value": "only a question"}]},
        _record("ok-0"),
        _record("escape", image="../outside/secret.png"),
        _record("linked", image="images/link.png"),
        _record("gone", image="images/gone.png"),
        _record("junk", image="images/junk.png"),
        _record("bomb", image="images/bomb.png"),
    ]
    pool = root / "pool.jsonl"
    pool.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return pool


def test_index_command_end_to_end(tmp_path, capsys):
    pool, store = _bad_pool(tmp_path), tmp_path / "index"
    argv = ["index", "--pool", str(pool), "--store", str(store), "--clusters", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "records read" in out and "image_too_large" in out and "samples/s" in out
    quarantine = store / "quarantine-pool.jsonl"
    rows = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert sorted(r["reason"] for r in rows) == sorted([
        "bad_json", "invalid_record", "duplicate_id", "image_outside_root", "image_outside_root",
        "image_missing", "image_unreadable", "image_too_large"])
    assert {r["line"] for r in rows} == set(range(5, 13))

    from tutorloop.retrieval.index import PoolIndex

    def count() -> int:
        index = PoolIndex.open(store=store)
        try:
            return index.count()
        finally:
            index.close()

    assert count() == 4
    assert main(argv) == 0  # a second run leaves the point count unchanged
    assert count() == 4


def test_index_command_errors(tmp_path, capsys):
    assert main(["index", "--pool", str(tmp_path / "missing.jsonl"), "--store", str(tmp_path / "s")]) == 2
    assert "pool file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n[1, 2]\n")
    assert main(["index", "--pool", str(bad), "--store", str(tmp_path / "s"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no valid record among 2 read (bad_json 1, invalid_record 1; line 1:" in err
    quarantined = [json.loads(line) for line in (tmp_path / "s" / "quarantine-pool.jsonl").read_text().splitlines()]
    assert [row["line"] for row in quarantined] == [1, 2], "every rejected record is kept, even when none is valid"
    assert main(["index", "--pool", str(bad), "--clusters", "lots"]) == 2
    assert "--clusters" in capsys.readouterr().err


def test_index_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--pool", "--image-root", "--store", "--qdrant-url", "--collection", "--embedder",
                 "--clusters", "--batch-size", "--quarantine"):
        assert flag in text


def test_ensure_index_reuses_its_store_only_for_the_pool_it_was_built_from(tmp_path):
    from tutorloop.agents import api

    pool = tmp_path / "data" / "pool.jsonl"
    pool.parent.mkdir()
    (pool.parent / "images").mkdir()
    Image.new("RGB", (8, 8), "green").save(pool.parent / "images" / "ok.png")
    pool.write_text("".join(json.dumps(_record(f"a-{i}", question=f"How many circles, {i}?")) + "\n" for i in range(6)))
    config = api.IndexConfig(pool=pool, store=tmp_path / "index", clusters=2, progress=False)
    api.ensure_index(config)
    marker = (tmp_path / "index" / api.INDEX_COMPLETE).stat().st_mtime_ns
    api.ensure_index(config)
    assert (tmp_path / "index" / api.INDEX_COMPLETE).stat().st_mtime_ns == marker, "the same pool: reused"

    other = tmp_path / "data" / "other.jsonl"
    other.write_text(pool.read_text())
    with pytest.raises(ValueError, match=r"built from another pool \(pool .*pool.jsonl → .*other.jsonl"):
        api.ensure_index(config.model_copy(update={"pool": other}))
    with pool.open("a") as f:
        f.write(json.dumps(_record("a-new", question="What colour is it?")) + "\n")
    with pytest.raises(ValueError, match="pool.jsonl changed"):
        api.ensure_index(config)
    api.ensure_index(config, rebuild=True)

    from tutorloop.retrieval.index import PoolIndex

    index = PoolIndex.open(store=tmp_path / "index")
    try:
        assert index.count() == 7, "rebuilt from the grown pool"
    finally:
        index.close()
