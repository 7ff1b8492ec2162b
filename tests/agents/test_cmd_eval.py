"""`tutorloop eval` end to end through the CLI, on model folders and data files it has never seen."""

from __future__ import annotations

import json
import shutil

import pytest

from lab.architectures import build_tiny_idefics3
from tutorloop.agents.cli import main
from tutorloop.training.configs import LoraTrainConfig
from tutorloop.training.lora import train_lora
from tutorloop.training.records import EvalRecord
from tutorloop.training.student import load_student

from ..conftest import make_sample


def _last_json(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def test_eval_prints_json_summary_last_and_writes_records(colour_llava, tiny_data, tmp_path, capsys):
    student = tmp_path / "somebody's model"  # a copied folder: nothing about it is known in advance
    shutil.copytree(colour_llava, student)
    data = tmp_path / "val.json"  # a JSON array, images relative to another root, one broken record
    records = [s.to_record() for s in tiny_data.samples[:6]]
    records[1]["conversations"][-1]["value"] = "purple"  # a wrong reference: 5 of 6 right
    records.append({"id": "broken", "conversations": []})
    data.write_text(json.dumps(records))
    out = tmp_path / "eval" / "records.jsonl"

    code = main(["eval", "--student", str(student), "--data", str(data), "--image-root", str(tiny_data.root),
                 "--out", str(out), "--batch-size", "4", "--no-progress"])
    assert code == 0
    summary = _last_json(capsys)
    assert summary == {"accuracy": 5 / 6, "n": 6, "by_source": {"colour": {"accuracy": 5 / 6, "n": 6, "correct": 5}}}
    rows = [EvalRecord.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [r.id for r in rows] == [r["id"] for r in records[:6]]
    assert [r.correct for r in rows] == [True, False, True, True, True, True]


def test_eval_with_adapter_on_a_fresh_idefics3(tiny_data, tmp_path, capsys):
    student_dir = build_tiny_idefics3(tmp_path / "idefics3", tiny_data.texts, seed=11, image_size=32, hidden=32,
                                      layers=1, heads=2, vision_hidden=32, vision_layers=1)
    adapter = tmp_path / "adapter"
    train_lora(load_student(student_dir, device="cpu"), tiny_data.yes_no[:8], tiny_data.root,
               LoraTrainConfig(epochs=1, batch_size=8), adapter, progress=False)
    mixed = [*tiny_data.samples[:3], *tiny_data.yes_no[:3], make_sample("text-0", None, "Is the shape red?", "no", "text")]
    data = tmp_path / "data" / "test.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(s.to_record()) + "\n" for s in mixed))
    shutil.copytree(tiny_data.root / "images", data.parent / "images")  # default image root: the file's folder

    code = main(["eval", "--student", str(student_dir), "--adapter", str(adapter), "--data", str(data),
                 "--matcher", "exact", "--max-new-tokens", "3", "--no-progress"])
    assert code == 0
    summary = _last_json(capsys)
    assert summary["n"] == 7 and set(summary["by_source"]) == {"colour", "colour_check", "text"}
    assert 0.0 <= summary["accuracy"] <= 1.0


@pytest.mark.parametrize(("change", "message"), [
    ({"--data": "missing.jsonl"}, "data file not found"),
    ({"--adapter": "."}, "no PEFT adapter"),
    ({"--image-root": "nowhere"}, "image root is not a folder"),
])
def test_bad_arguments_exit_2_with_a_clear_error(colour_llava, tiny_data, tmp_path, capsys, change, message):
    data = tiny_data.write("eval-args.jsonl", tiny_data.samples[:2])
    args = {"--student": str(colour_llava), "--data": str(data)}
    args.update({k: str(tmp_path / v) if v != "." else str(tmp_path) for k, v in change.items()})
    assert main(["eval", *[x for kv in args.items() for x in kv], "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_file_without_a_valid_record_exits_2(colour_llava, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text('{"id": 1}\nnot json\n')
    assert main(["eval", "--student", str(colour_llava), "--data", str(data), "--no-progress"]) == 2
    assert "no valid record" in capsys.readouterr().err
