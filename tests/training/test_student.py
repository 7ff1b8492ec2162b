"""Loading, prompts and batches: labels cover the answer only, text-only samples work, left padding."""

from __future__ import annotations

import torch

from tutorloop.training.student import (
    IGNORE_INDEX,
    PromptItem,
    answer_nll,
    build_inputs,
    build_prompt,
    items_from_samples,
    load_student,
)


def test_load_student_on_cpu_is_fp32_and_in_eval_mode(tiny_student_dir):
    student = load_student(tiny_student_dir, device="cpu")
    assert student.device.type == "cpu"
    assert student.dtype == torch.float32
    assert not student.model.training
    assert not student.is_peft


def test_prompt_uses_chat_template_when_present_else_plain(tiny_student_dir):
    student = load_student(tiny_student_dir, device="cpu")
    prompt = build_prompt(student.processor, "What colour is the shape?")
    assert prompt.startswith("user: <image>\n") and prompt.endswith("assistant:")
    student.processor.chat_template = None
    assert build_prompt(student.processor, "What colour?") == "<image>\nWhat colour?"
    assert build_prompt(student.processor, "What colour?", with_image=False) == "What colour?"


def test_labels_mark_only_the_answer_tokens(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    items = items_from_samples(tiny_data.samples[:2], tiny_data.root, with_answer=True)
    items.append(PromptItem([], "Is the shape red?", "yes"))  # text-only: a blank image, same layout
    batch = build_inputs(student, items)
    tokenizer = student.tokenizer
    for row, item in enumerate(items):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(kept, skip_special_tokens=True).strip() == item.answer
        assert kept[-1] == tokenizer.eos_token_id
    pad = batch["input_ids"] == tokenizer.pad_token_id
    assert not (batch["labels"][pad] != IGNORE_INDEX).any()
    assert batch["attention_mask"][:, -1].all()  # left padding: every row ends with real tokens


def test_text_only_forward_has_no_pixels(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    batch = build_inputs(student, items_from_samples(tiny_data.samples[:2], tiny_data.root, with_answer=True),
                         with_image=False)
    assert "pixel_values" not in batch
    image_id = student.tokenizer.convert_tokens_to_ids("<image>")
    assert not (batch["input_ids"] == image_id).any()
    with torch.inference_mode():
        assert torch.isfinite(student.model(**batch).loss)


def test_answer_nll_equals_the_models_own_loss(tiny_student_dir, tiny_data):
    student = load_student(tiny_student_dir, device="cpu")
    items = items_from_samples(tiny_data.samples[:3] + tiny_data.yes_no[:3], tiny_data.root, with_answer=True)
    batch = build_inputs(student, items)
    with torch.inference_mode():
        reference = student.model(**batch).loss
        ours = answer_nll(student, batch)
        rows = answer_nll(student, batch, reduction="row")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert rows.shape == (6,)
