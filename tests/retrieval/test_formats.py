"""Real-pool forms: LLaVA (one image, several, none; multi-turn; system turns; extra keys; integer ids),
LLaMA-Factory sharegpt and OpenAI/TRL messages — read into one record, indexed, written back as read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorloop.retrieval.formats import FormatError, export, to_canonical
from tutorloop.retrieval.ingest import Accepted, IngestTally, Rejected, iter_samples
from tutorloop.retrieval.records import Sample


def real_pool(root: Path, kit) -> dict[str, list]:
    """One small pool per form, each with multi-image, text-only, multi-turn and system records."""
    for name in ("a", "b", "c"):
        kit.write_png(root / "images" / f"{name}.png")
    llava = [
        {"id": "l-one", "image": "images/a.png", "source": "s",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]},
        {"id": "l-two", "image": ["images/a.png", "images/b.png"], "meta": {"k": 1},
         "conversations": [{"from": "human", "value": "<image>\n<image>\nSame colour?", "weight": 0},
                           {"from": "gpt", "value": "yes"}]},
        {"id": 3, "conversations": [{"from": "system", "value": "Answer briefly."},
                                    {"from": "human", "value": "Two plus two?"}, {"from": "gpt", "value": "4"},
                                    {"from": "human", "value": "And three?"}, {"from": "gpt", "value": "5"}]},
        {"id": "l-untagged", "image": "images/c.png",  # no tag: LLaVA puts it in front
         "conversations": [{"from": "human", "value": "What shape?"}, {"from": "gpt", "value": "circle"}]},
    ]
    sharegpt = [
        {"id": "g-one", "images": ["images/a.png", "images/c.png"], "system": "You look at pictures.",
         "conversations": [{"from": "human", "value": "<image><image>Which is brighter?"},
                           {"from": "gpt", "value": "the first"}]},
        {"id": "g-text", "conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "blue"}]},
    ]
    messages = [
        {"id": "m-one", "images": ["images/b.png"],
         "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "a square"}]}]},
        {"id": "m-turns", "images": ["images/a.png", "images/b.png"],
         "messages": [{"role": "system", "content": [{"type": "text", "text": "Be exact."}]},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "blue"}]}]},
        {"id": "m-factory", "images": ["images/c.png"],  # LLaMA-Factory's messages: string content with tags
         "messages": [{"role": "user", "content": "<image>What shape?"}, {"role": "assistant", "content": "circle"}]},
    ]
    return {"llava": llava, "sharegpt": sharegpt, "messages": messages}


@pytest.mark.parametrize("form", ["llava", "sharegpt", "messages"])
def test_every_form_reads_and_writes_back_as_read(tmp_path, kit, form):
    rows = real_pool(tmp_path, kit)[form]
    path = tmp_path / f"{form}.json"
    path.write_text(json.dumps(rows, indent=2))  # a JSON array, streamed element by element
    results = list(iter_samples(path, tmp_path))
    assert all(isinstance(r, Accepted) for r in results), [r for r in results if isinstance(r, Rejected)]
    for row, result in zip(rows, results, strict=True):
        sample = result.sample
        # a sharegpt record with neither images nor a system prompt is a LLaVA record, byte for byte
        assert sample.form == ("llava" if row["id"] == "g-text" else form) and sample.id == str(row["id"])
        back = sample.to_record()
        if row["id"] == "l-untagged":
            assert back["conversations"][0]["value"] == "<image>\nWhat shape?"
            continue
        expected = {**row, "id": str(row["id"])}
        if form == "messages" and isinstance(row["messages"][0]["content"], str):
            continue  # string content comes back as parts (the same messages in TRL's form)
        assert back == expected
        assert Sample.model_validate(back) == sample


def test_multi_turn_system_and_images_in_the_canonical_record(tmp_path, kit):
    pool = real_pool(tmp_path, kit)
    two = Sample.model_validate(pool["messages"][1])
    assert two.images == ["images/a.png", "images/b.png"]
    assert [t.speaker for t in two.conversations] == ["system", "human", "gpt", "human", "gpt"]
    assert two.question == "And this one?" and two.reference == "blue"
    assert "Colour?" in two.instruction_text and "And this one?" in two.instruction_text
    assert Sample.model_validate(pool["llava"][1]).conversations[0].model_extra == {"weight": 0}
    assert Sample.model_validate(pool["sharegpt"][0]).conversations[0].speaker == "system"


def test_conversion_between_forms_keeps_the_content(tmp_path, kit):
    sample = Sample.model_validate(real_pool(tmp_path, kit)["sharegpt"][0])
    as_messages = sample.to_record("messages")
    assert as_messages["images"] == ["images/a.png", "images/c.png"]
    assert [p["type"] for p in as_messages["messages"][1]["content"]] == ["image", "image", "text"]
    again = Sample.model_validate(as_messages)
    assert (again.question, again.reference, again.images) == (sample.question, sample.reference, sample.images)
    assert [t.speaker for t in again.conversations] == [t.speaker for t in sample.conversations]
    llava = sample.to_record("llava")
    assert llava["image"] == ["images/a.png", "images/c.png"] and llava["conversations"][0]["from"] == "system"


def test_integer_ids_tag_mismatches_and_clashes_are_reasons(tmp_path, kit):
    kit.write_png(tmp_path / "images" / "a.png")
    rows = [{"id": 7, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            {"id": "7", "conversations": [{"from": "human", "value": "again"}, {"from": "gpt", "value": "a"}]},
            {"id": "x", "images": ["images/a.png"],
             "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]},
                          {"role": "assistant", "content": "a"}]},
            {"id": "y", "messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "a"}]}]
    path = kit.write_jsonl(tmp_path / "pool.jsonl", rows)
    tally = IngestTally()
    reasons = []
    for result in iter_samples(path, tmp_path):
        tally.add(result)
        reasons.append(getattr(result, "reason", "accepted"))
    assert reasons == ["accepted", "duplicate_id", "image_tag_mismatch", "invalid_record"]
    assert tally.read == len(rows) == tally.accepted + tally.rejected_total
    with pytest.raises(FormatError, match="2 <image> tag"):
        to_canonical(rows[2])


def test_export_refuses_an_unknown_form():
    canonical = to_canonical({"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    with pytest.raises(ValueError, match="unknown form"):
        export(canonical, "alpaca")


def test_each_form_indexes_and_comes_back_from_the_index_in_its_form(tmp_path, kit, minilm):
    from tutorloop.retrieval.index import PoolIndex, index_pool

    for form, rows in real_pool(tmp_path, kit).items():
        path = kit.write_jsonl(tmp_path / f"{form}.jsonl", rows)
        index = PoolIndex.open(store=tmp_path / f"store-{form}")
        try:
            report = index_pool(path, index=index, embedder=minilm, embedder_name="test", clusters=1, progress=False)
            assert report.counts["read"] == report.counts["accepted"] == len(rows) == index.count()
            ids = [str(r["id"]) for r in rows]
            fetched = index.fetch(ids)
            assert [s.to_record() for s in fetched] == [Sample.model_validate(r).to_record() for r in rows]
            assert {p["sample_id"]: len(p["images"]) for p in index.payloads(["sample_id", "images"])} == {
                str(r["id"]): len(Sample.model_validate(r).images) for r in rows}
        finally:
            index.close()


def test_a_multi_image_sample_reaches_the_student_with_all_its_images(tmp_path, kit, tiny_llava):
    from tutorloop.training.student import build_inputs, items_from_samples, load_student

    pool = real_pool(tmp_path, kit)
    samples = [Sample.model_validate(pool["llava"][1]), Sample.model_validate(pool["llava"][0])]
    student = load_student(tiny_llava, device="cpu")
    items = items_from_samples(samples, tmp_path, with_answer=True)
    assert [len(i.images) for i in items] == [2, 1]
    batch = build_inputs(student, items)
    assert batch["pixel_values"].shape[0] == 3, "two images for the first row, one for the second"
    loss = student.model(**batch).loss
    assert loss.isfinite()


def test_a_multi_image_failure_reaches_the_teacher_with_all_its_images(tmp_path, kit):
    from tutorloop.agents.teacher import build_messages
    from tutorloop.training.records import EvalRecord

    real_pool(tmp_path, kit)
    record = EvalRecord(id="l-two", image="images/a.png", images=["images/a.png", "images/b.png"], question="Same?",
                        reference="yes", prediction="no", correct=False)
    messages, warnings = build_messages(record, tmp_path, send_images=True)
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and not warnings
    assert "2 images" in parts[-1]["text"]


# --- tables: Parquet with image bytes, a datasets.save_to_disk folder ---------------------------------


def _png_bytes(colour: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _table_rows() -> list[dict]:
    """LLaVA-OneVision's layout (image struct + conversations) and The Cauldron's (images list + texts)."""
    return [
        {"id": "p0", "image": {"bytes": _png_bytes("red"), "path": None},
         "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]},
        {"id": "p1", "image": {"bytes": b"not a png", "path": None},  # rejected: unreadable bytes
         "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "?"}]},
        {"id": "p2", "image": None,
         "conversations": [{"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "yes"}]},
    ]


def test_parquet_with_image_bytes_streams_by_row_group_and_keeps_the_bytes_in_place(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tutorloop.retrieval.images import open_image

    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(_table_rows() * 3), path, row_group_size=2)  # ids repeat: duplicates
    results = list(iter_samples(path))
    reasons = [getattr(r, "reason", "accepted") for r in results]
    assert reasons == ["accepted", "image_unreadable", "accepted"] + ["duplicate_id", "image_unreadable",
                                                                      "duplicate_id"] * 2
    assert [r.line for r in results][:3] == [1, 2, 3] and '"_row": 1' in results[1].raw
    assert "<9 bytes>" in results[1].raw, "the quarantine shows image bytes as their size"
    first = results[0].sample
    assert first.image == "parquet:pool.parquet:0:image:0"
    with open_image(tmp_path, first.image) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert results[2].sample.images == []


def test_the_cauldron_layout_and_a_folder_of_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "cauldron" / "data"
    folder.mkdir(parents=True)
    rows = [{"images": [{"bytes": _png_bytes("blue"), "path": None}, {"bytes": _png_bytes("green"), "path": None}],
             "texts": [{"user": "Which is bluer?", "assistant": "the first", "source": "x"}]}]
    for shard in range(2):
        pq.write_table(pa.Table.from_pylist(rows), folder / f"train-{shard:05d}.parquet")
    results = list(iter_samples(tmp_path / "cauldron"))
    assert all(isinstance(r, Accepted) for r in results) and len(results) == 2
    sample = results[1].sample
    assert sample.id == "train-00001-0" and len(sample.images) == 2
    assert sample.conversations[0].value.count("<image>") == 2 and sample.reference == "the first"


def test_a_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is in the dev extra")

    rows = [r for r in _table_rows() if r["id"] != "p1"]
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}]})
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    results = list(iter_samples(tmp_path / "saved"))
    assert [r.sample.id for r in results if isinstance(r, Accepted)] == ["p0", "p2"]
    assert results[0].sample.image.startswith("arrow:data-00000-of-00001.arrow:0:image:")


def test_a_parquet_pool_indexes_and_its_images_reach_the_student(tmp_path, minilm, tiny_llava):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tutorloop.retrieval.index import PoolIndex, index_pool
    from tutorloop.training.student import items_from_samples

    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(_table_rows()), path)
    index = PoolIndex.open(store=tmp_path / "store")
    try:
        report = index_pool(path, index=index, embedder=minilm, embedder_name="test", clusters=1, progress=False,
                            quarantine_path=tmp_path / "q.jsonl")
        assert report.counts == {**report.counts, "read": 3, "accepted": 2, "rejected": 1}
        sample = index.fetch(["p0"])[0]
    finally:
        index.close()
    item = items_from_samples([sample], tmp_path, with_answer=False)[0]
    assert item.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert json.loads((tmp_path / "q.jsonl").read_text())["reason"] == "image_unreadable"
