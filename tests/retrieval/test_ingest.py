"""Ingestion: every rejection reason, both file formats, streaming buffers, reconciled counts."""

from __future__ import annotations

import json
import logging

import pytest

import tutorloop.retrieval.ingest as ingest
from tutorloop.retrieval.ingest import (
    REASONS,
    Accepted,
    IngestTally,
    QuarantineWriter,
    Rejected,
    iter_samples,
    load_samples,
)


def _results(path, **kwargs):
    return list(iter_samples(path, **kwargs))


def _only_rejection(results):
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert len(rejected) == 1, rejected
    return rejected[0]


def _pool_with(tmp_path, kit, bad_row):
    kit.write_png(tmp_path / "images" / "ok.png")
    return kit.write_jsonl(tmp_path / "pool.jsonl", [kit.record("good"), bad_row, kit.record("good-2")])


def test_bad_json_names_line(tmp_path, kit):
    result = _only_rejection(_results(_pool_with(tmp_path, kit, '{"id": "x", "conversations": [')))
    assert (result.line, result.reason) == (2, "bad_json")
    assert "invalid JSON" in result.detail and result.raw.startswith('{"id": "x"')


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"id": "no-conv"}, "conversations"),
        ({"id": 7.5, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "id"),
        ({"id": "h", "conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "a"}]}, "gpt"),
        ({"id": "t", "conversations": [{"from": "robot", "value": "q"}, {"from": "gpt", "value": "a"}]}, "from"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_invalid_record(tmp_path, kit, row, needle):
    result = _only_rejection(_results(_pool_with(tmp_path, kit, row)))
    assert (result.line, result.reason) == (2, "invalid_record")
    assert needle in result.detail


def test_duplicate_id_keeps_the_first(tmp_path, kit):
    results = _results(_pool_with(tmp_path, kit, kit.record("good", question="second copy")))
    result = _only_rejection(results)
    assert (result.line, result.reason) == (2, "duplicate_id")
    first = next(r for r in results if isinstance(r, Accepted) and r.sample.id == "good")
    assert first.line == 1


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_image_outside_root(tmp_path, kit, kind):
    root, outside = tmp_path / "root", tmp_path / "outside"
    kit.write_png(outside / "secret.png")
    kit.write_png(root / "images" / "ok.png")
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    image = {"dotdot": "../outside/secret.png", "absolute": str(outside / "secret.png"),
             "symlink": "images/link.png"}[kind]
    pool = kit.write_jsonl(root / "pool.jsonl", [kit.record("good"), kit.record("bad", image=image)])
    result = _only_rejection(_results(pool))
    assert (result.line, result.reason) == (2, "image_outside_root")


def test_image_missing(tmp_path, kit):
    result = _only_rejection(_results(_pool_with(tmp_path, kit, kit.record("m", image="images/nope.png"))))
    assert (result.line, result.reason) == (2, "image_missing")


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_image_unreadable(tmp_path, kit, kind):
    path = tmp_path / "images" / "bad.png"
    if kind == "garbage":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"this is not a png")
    else:
        kit.write_png(path, (64, 64), "blue")
        path.write_bytes(path.read_bytes()[:70])
    result = _only_rejection(_results(_pool_with(tmp_path, kit, kit.record("u", image="images/bad.png"))))
    assert (result.line, result.reason) == (2, "image_unreadable")


def test_image_too_large_bomb_header(tmp_path, kit):
    kit.write_bomb_png(tmp_path / "images" / "bomb.png")
    result = _only_rejection(_results(_pool_with(tmp_path, kit, kit.record("b", image="images/bomb.png"))))
    assert (result.line, result.reason) == (2, "image_too_large")


def test_image_too_large_by_pixel_limit(tmp_path, kit):
    kit.write_png(tmp_path / "images" / "big.png", (64, 64))
    pool = _pool_with(tmp_path, kit, kit.record("b", image="images/big.png"))
    result = _only_rejection(_results(pool, max_pixels=64 * 63))
    assert result.reason == "image_too_large" and "64x64" in result.detail


def test_image_checks_can_be_skipped(tmp_path, kit):
    pool = _pool_with(tmp_path, kit, kit.record("m", image="images/nope.png"))
    assert all(isinstance(r, Accepted) for r in _results(pool, check_images=False))


def test_every_reason_at_once_reconciles(tmp_path, kit):
    rows, expected = kit.bad_pool(tmp_path / "root", tmp_path / "outside")
    pool = kit.write_jsonl(tmp_path / "root" / "pool.jsonl", rows)
    tally = IngestTally()
    for result in iter_samples(pool):
        tally.add(result)
    summary = tally.as_dict()
    assert summary["by_reason"] == expected
    assert set(summary["by_reason"]) == set(REASONS)
    assert summary["read"] == len(rows) == summary["accepted"] + summary["rejected"]
    assert summary["accepted"] == 4


def _pretty_array(rows) -> str:
    parts = [row if isinstance(row, str) else json.dumps(row, indent=2) for row in rows]
    return "[\n" + ",\n".join("  " + p.replace("\n", "\n  ") for p in parts) + "\n]\n"


@pytest.mark.parametrize("chunk", [37, 1 << 20])
def test_json_array_matches_jsonl(tmp_path, kit, monkeypatch, chunk):
    monkeypatch.setattr(ingest, "_CHUNK_CHARS", chunk)  # a tiny chunk forces elements across buffer refills
    rows, _ = kit.bad_pool(tmp_path / "root", tmp_path / "outside")
    broken = '{"id": "broken", "conversations": [\n    {"from": "human" "value": "x"}\n  ]}'
    rows = [broken if isinstance(r, str) else r for r in rows]
    jsonl = kit.write_jsonl(tmp_path / "root" / "pool.jsonl", [json.dumps(r) if isinstance(r, dict) else r.replace("\n", " ") for r in rows])
    array = tmp_path / "root" / "pool.json"
    array.write_text(_pretty_array(rows), encoding="utf-8")

    def key(results):
        return [(type(r).__name__, r.sample.id if isinstance(r, Accepted) else r.reason) for r in results]

    from_array, from_jsonl = _results(array), _results(jsonl)
    assert key(from_array) == key(from_jsonl)
    # a record's line in an array is the line where it starts
    text_lines = array.read_text().splitlines()
    for result in from_array:
        assert text_lines[result.line - 1].lstrip().startswith("{")


def test_compact_json_array_and_blank_lines(tmp_path, kit):
    kit.write_png(tmp_path / "images" / "ok.png")
    (tmp_path / "a.json").write_text(json.dumps([kit.record("a"), kit.record("b")]))
    assert [r.sample.id for r in _results(tmp_path / "a.json")] == ["a", "b"]
    (tmp_path / "b.jsonl").write_text("\n" + json.dumps(kit.record("a")) + "\n\n" + json.dumps(kit.record("b")) + "\n")
    assert [(r.line, r.sample.id) for r in _results(tmp_path / "b.jsonl")] == [(2, "a"), (4, "b")]


def test_non_utf8_line_is_not_utf8(tmp_path, kit):
    kit.write_png(tmp_path / "images" / "ok.png")
    good = json.dumps(kit.record("a")).encode()
    (tmp_path / "p.jsonl").write_bytes(good + b"\n" + b'{"id": "\xff\xfe"}\n')
    result = _only_rejection(_results(tmp_path / "p.jsonl"))
    assert (result.line, result.reason) == (2, "not_utf8")


def test_quarantine_rows(tmp_path):
    path = tmp_path / "q" / "quarantine.jsonl"
    with QuarantineWriter(path, source=tmp_path / "pool.jsonl") as writer:
        writer.write(Rejected(3, "bad_json", "invalid JSON", "{"))
    row = json.loads(path.read_text())
    assert {k: row[k] for k in ("line", "reason", "detail", "raw")} == {
        "line": 3, "reason": "bad_json", "detail": "invalid JSON", "raw": "{"}


def test_load_samples_warns_and_fails_when_empty(tmp_path, kit, caplog):
    pool = _pool_with(tmp_path, kit, "{oops")
    with caplog.at_level(logging.WARNING):
        assert [s.id for s in load_samples(pool)] == ["good", "good-2"]
    assert "pool.jsonl:2" in caplog.text and "bad_json" in caplog.text
    kit.write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"id": "x"}])
    with pytest.raises(ValueError, match="bad.jsonl"):
        load_samples(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_samples(tmp_path / "missing.jsonl")


def test_explicit_image_root(tmp_path, kit):
    kit.write_png(tmp_path / "imgs" / "images" / "ok.png")
    (tmp_path / "data").mkdir()
    pool = kit.write_jsonl(tmp_path / "data" / "pool.jsonl", [kit.record("a")])
    assert isinstance(_results(pool)[0], Rejected)  # default root: the pool's folder, where the image is not
    assert isinstance(_results(pool, image_root=tmp_path / "imgs")[0], Accepted)


def test_pools_as_users_have_them_get_named_reasons_and_stable_ids(tmp_path):
    """A record without an id gets ``<file stem>-<line>``; bytes that are not UTF-8 are ``not_utf8``; a record with
    a huge text field is ``text_too_long``; read = accepted + rejected."""
    good = {"conversations": [{"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": "red"}]}
    huge = {"id": "huge", "conversations": [{"from": "human", "value": "x" * (ingest.MAX_TEXT_CHARS + 1)},
                                           {"from": "gpt", "value": "y"}]}
    path = tmp_path / "mine.jsonl"
    path.write_bytes(json.dumps(good).encode() + b"\n" + b'{"id": "bad\xff"}\n' + json.dumps(huge).encode() + b"\n")
    results = list(ingest.iter_samples(path, check_images=False))
    assert len(results) == 3
    assert isinstance(results[0], ingest.Accepted) and results[0].sample.id == "mine-1"
    assert [r.reason for r in results[1:]] == ["not_utf8", "text_too_long"]
    again = next(iter(ingest.iter_samples(path, check_images=False)))
    assert again.sample.id == "mine-1", "stable: the same file gives the same id"
    one_line = tmp_path / "sharegpt.json"  # LLaMA-Factory's own files are JSON arrays, often on one line
    one_line.write_text(json.dumps([good, good, good]))
    assert [r.sample.id for r in ingest.iter_samples(one_line, check_images=False)] == [
        "sharegpt-1", "sharegpt-2", "sharegpt-3"], "an array's records are numbered by place, not by line"
