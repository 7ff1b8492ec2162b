"""The tiny students reload bit-identically and their tokenizers know every word they were built on."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from lab.architectures import build_tiny_idefics3
from tutorloop.training.student import PromptItem, build_inputs, load_student
from tutorloop.training.tiny import build_tiny_llava, sincos_2d


def test_reload_is_bit_identical(tiny_student_dir, tiny_data):
    model = AutoModelForImageTextToText.from_pretrained(tiny_student_dir)
    again = AutoModelForImageTextToText.from_pretrained(tiny_student_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    processor = AutoProcessor.from_pretrained(tiny_student_dir)
    assert processor.tokenizer.padding_side == "left"
    assert processor.chat_template


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_data):
    first = build_tiny_llava(tmp_path / "a", tiny_data.texts, seed=3, hidden=32, layers=1, heads=2,
                             vision_hidden=32, vision_layers=1, image_size=16)
    second = build_tiny_llava(tmp_path / "b", tiny_data.texts, seed=3, hidden=32, layers=1, heads=2,
                              vision_hidden=32, vision_layers=1, image_size=16)
    third = build_tiny_llava(tmp_path / "c", tiny_data.texts, seed=4, hidden=32, layers=1, heads=2,
                             vision_hidden=32, vision_layers=1, image_size=16)
    weights = [AutoModelForImageTextToText.from_pretrained(p).state_dict() for p in (first, second, third)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_seen_words_never_unknown(tiny_student_dir, tiny_data):
    tokenizer = AutoProcessor.from_pretrained(tiny_student_dir).tokenizer
    for text in tiny_data.texts:
        ids = tokenizer(text.upper(), add_special_tokens=False)["input_ids"]  # lower-casing is part of it
        assert tokenizer.unk_token_id not in ids, text
    assert tokenizer.unk_token_id in tokenizer("zebra", add_special_tokens=False)["input_ids"]


def test_default_llava_is_about_three_million_parameters(tmp_path, tiny_data):
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_llava(tmp_path / "m", tiny_data.texts))
    assert 2.8e6 < sum(p.numel() for p in model.parameters()) < 3.6e6
    assert model.config.vision_feature_select_strategy == "full"


def test_idefics3_uses_sixteen_image_tokens(tmp_path, tiny_data):
    path = build_tiny_idefics3(tmp_path / "m", tiny_data.texts, image_size=64, patch_size=8, scale_factor=2,
                               hidden=32, layers=1, heads=2, vision_hidden=32, vision_layers=1)
    student = load_student(path, device="cpu")
    batch = build_inputs(student, [PromptItem([], "What colour is the shape?")])
    image_id = student.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == 16


def test_sincos_position_init_codes_column_and_row(tmp_path, tiny_data):
    table = sincos_2d(4, 16)
    assert table.shape == (16, 16)
    for row in range(4):  # the first half depends on the column only, the second on the row only
        for col in range(4):
            assert torch.equal(table[row * 4 + col, :8], table[col, :8])
            assert torch.equal(table[row * 4 + col, 8:], table[row * 4, 8:])
    assert not torch.equal(table[0], table[1])
    path = build_tiny_llava(tmp_path / "m", tiny_data.texts, hidden=32, layers=1, heads=2, vision_hidden=32,
                            vision_layers=1, image_size=16, patch_size=4, position_init="sincos")
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert torch.equal(model.model.vision_tower.embeddings.position_embedding.weight, sincos_2d(4, 32))
    with pytest.raises(ValueError, match="position_init"):
        build_tiny_llava(tmp_path / "x", tiny_data.texts, position_init="learned")
