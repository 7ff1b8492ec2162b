"""Shared fixtures of the retrieval tests: the real MiniLM embedder and small pools with real PNGs."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "How many circles are there?",
    "What colour is the square?",
    "Is the triangle left of the circle?",
    "Count the red shapes.",
    "Which shape is the largest?",
    "What is written on the sign?",
]


@pytest.fixture(scope="session")
def minilm():
    from tutorloop.retrieval.embed import load_embedder

    return load_embedder()


def record(sample_id: str, image: str | None = "images/ok.png", question: str = "How many circles?",
           answer: str = "3", source: str = "test") -> dict:
    tag = "<image>\n" if image is not None else ""  # one tag per image (retrieval/formats.py)
    rec = {"id": sample_id, "conversations": [{"from": "human", "value": f"{tag}{question}"},
                                              {"from": "gpt", "value": answer}], "source": source}
    if image is not None:
        rec["image"] = image
    return rec


def write_png(path: Path, size: tuple[int, int] = (8, 8), colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header declares a huge size (what a decompression bomb looks like to a reader)."""
    write_png(path, (1, 1))
    data = bytearray(path.read_bytes())
    # IHDR: length(4) 'IHDR'(4) at offset 8; width/height at 16..24; CRC over type+data at 29..33.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bad_pool(root: Path, outside: Path) -> tuple[list, dict[str, int]]:
    """Rows of a pool with every kind of bad record (plus good ones), and the expected counts by reason."""
    write_png(root / "images" / "ok.png")
    write_png(outside / "secret.png")
    (root / "images" / "garbage.png").write_bytes(b"not an image at all")
    full = root / "images" / "truncated.png"
    write_png(full, (64, 64), "blue")
    full.write_bytes(full.read_bytes()[:60])
    write_bomb_png(root / "images" / "bomb.png")
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    rows = [
        record("good-0", question=QUESTIONS[0]),
        '{"id": "broken", "conversations": [',                          # bad_json
        {"id": "no-conv"},                                             # invalid_record
        {"id": ["x"], "conversations": record("x")["conversations"]},  # invalid_record (id type)
        {**record("tags"), "conversations": [{"from": "human", "value": "<image> <image> two?"},
                                             {"from": "gpt", "value": "a"}]},  # image_tag_mismatch
        {"id": "only-human", "conversations": [{"from": "human", "value": "hi"}, {"from": "human", "value": "?"}]},
        record("good-0", question="duplicate"),                        # duplicate_id
        record("up", image="../secret.png"),                           # image_outside_root
        record("abs", image=str(outside / "secret.png")),              # image_outside_root
        record("link", image="images/link.png"),                       # image_outside_root (symlink)
        record("missing", image="images/nope.png"),                    # image_missing
        record("garbage", image="images/garbage.png"),                 # image_unreadable
        record("truncated", image="images/truncated.png"),             # image_unreadable
        record("bomb", image="images/bomb.png"),                       # image_too_large
        record("huge", question="x " * 40_000),                        # text_too_long
        record("good-1", question=QUESTIONS[1]),
        record("text-only", image=None, question=QUESTIONS[2]),
        record("good-2", question=QUESTIONS[3]),
    ]
    expected = {"bad_json": 1, "not_utf8": 0, "text_too_long": 1, "invalid_record": 3, "image_tag_mismatch": 1, "duplicate_id": 1, "image_outside_root": 3,
                "image_missing": 1, "image_unreadable": 2, "image_too_large": 1}
    return rows, expected


@pytest.fixture
def kit():
    """The helpers above, as a fixture (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(record=record, write_png=write_png, write_bomb_png=write_bomb_png,
                           write_jsonl=write_jsonl, bad_pool=bad_pool, questions=QUESTIONS)


@pytest.fixture
def local_server():
    """``local_server(folder)``: the server backend (retrieval/server_index.py) on qdrant-client's local mode,
    which stands in for a Qdrant server here: the same client API, run in-process."""
    from qdrant_client import QdrantClient

    from tutorloop.retrieval.server_index import ServerIndex

    def make(folder: Path) -> ServerIndex:
        folder.mkdir(parents=True, exist_ok=True)
        index = ServerIndex(QdrantClient(path=str(folder)), "pool")
        index.thread_safe = False  # local mode's SQLite connection stays on the thread that opened it
        return index

    return make
