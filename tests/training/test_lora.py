"""LoRA rounds: loss goes down, only adapter (and projector) weights move, adapters reload exactly,
training continues an adapter across rounds and is deterministic under a seed."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from tutorloop.training.configs import LoraTrainConfig, TrainConfig
from tutorloop.training.lora import (
    DEFAULT_TARGET,
    find_projector,
    lora_targets,
    mix_replay,
    train_full,
    train_lora,
)
from tutorloop.training.student import build_inputs, items_from_samples, load_student

from ..conftest import WARMTH_QUESTION, make_sample

FAST = {"epochs": 4, "batch_size": 8, "lr": 5e-3, "dropout": 0.0}
PROJECTOR = {"llava": "multi_modal_projector", "idefics3": "connector"}


def _base_name(peft_name: str) -> str | None:
    """The plain model's parameter name of a PEFT model's base parameter; None for adapter parameters."""
    if "lora_" in peft_name or ".modules_to_save." in peft_name:
        return None
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _logits(student, samples, root):
    batch = build_inputs(student, items_from_samples(samples, root, with_answer=True))
    with torch.inference_mode():
        return student.model(**batch).logits


def test_targets_are_language_model_projections_only(tiny_student_dir):
    model = load_student(tiny_student_dir, device="cpu").model
    targets = lora_targets(model, DEFAULT_TARGET)
    assert len(targets) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert not [t for t in targets if re.search("vision|connector|projector", t)]
    assert [n for n, _ in model.named_modules() if "vision" in n and n.endswith("q_proj")]  # they exist, unwrapped


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_lora_lowers_loss_and_moves_only_adapter_and_projector(arch, request, tiny_data, tmp_path):
    base_dir = request.getfixturevalue(f"tiny_{arch}")
    student = load_student(base_dir, device="cpu")
    before = _snapshot(student.model)
    report = train_lora(student, tiny_data.samples, tiny_data.root, LoraTrainConfig(**FAST, seed=1), tmp_path,
                        progress=False)
    assert report.steps == 8 and report.samples_per_s > 0
    assert sum(report.losses[-2:]) < sum(report.losses[:2])
    assert report.projector.endswith(PROJECTOR[arch])

    moved_adapter, moved_projector = False, False
    for name, param in student.model.named_parameters():
        base = _base_name(name)
        if base is None:
            assert "vision" not in name, f"adapter weight on the vision tower: {name}"
            moved_adapter |= "lora_B" in name and bool(param.abs().sum() > 0)  # lora_B starts at zero
            if ".modules_to_save." in name:
                original = name.replace(".modules_to_save.default", ".original_module")
                moved_projector |= not torch.equal(param, student.model.get_parameter(original))
        else:
            assert torch.equal(param, before[base]), f"base weight changed: {base}"
    assert moved_adapter and moved_projector
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["selected_ids"] == [s.id for s in tiny_data.samples] and saved["mode"] == "lora"
    assert (tmp_path / "adapter_config.json").exists()


def test_lora_without_projector_leaves_projector_alone(tiny_llava, tiny_data, tmp_path):
    student = load_student(tiny_llava, device="cpu")
    projector = find_projector(student.model)
    before = {k: v.clone() for k, v in student.model.get_submodule(projector).state_dict().items()}
    config = LoraTrainConfig(**{**FAST, "epochs": 1}, train_projector=False)
    report = train_lora(student, tiny_data.samples, tiny_data.root, config, tmp_path, progress=False)
    assert report.projector is None
    after = student.model.get_base_model().get_submodule(projector).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [n for n, p in student.model.named_parameters() if p.requires_grad and "lora_" not in n]


def test_saved_adapter_reloads_to_identical_outputs(tiny_student_dir, tiny_data, tmp_path):
    student = load_student(tiny_student_dir, device="cpu")
    train_lora(student, tiny_data.samples, tiny_data.root, LoraTrainConfig(**FAST), tmp_path, progress=False)
    trained = _logits(student, tiny_data.samples[:4], tiny_data.root)
    reloaded = load_student(tiny_student_dir, adapter=tmp_path, device="cpu")
    assert reloaded.is_peft
    assert torch.equal(_logits(reloaded, tiny_data.samples[:4], tiny_data.root), trained)
    plain = load_student(tiny_student_dir, device="cpu")
    assert not torch.equal(_logits(plain, tiny_data.samples[:4], tiny_data.root), trained)


def test_adapter_continues_across_rounds(tiny_llava, tiny_data, tmp_path):
    round_1, round_2 = tmp_path / "r1", tmp_path / "r2"
    first, later = tiny_data.samples[:16], tiny_data.yes_no
    train_lora(load_student(tiny_llava, device="cpu"), first, tiny_data.root, LoraTrainConfig(**FAST), round_1,
               progress=False)
    student = load_student(tiny_llava, adapter=round_1, device="cpu", is_trainable=True)
    start = _logits(student, later[:4], tiny_data.root)
    config = LoraTrainConfig(**FAST, replay_ratio=0.5, seed=2)
    report = train_lora(student, later, tiny_data.root, config, round_2, replay=first, progress=False)
    assert report.continued_adapter and report.n_replay == 8 and report.n_train == 24
    assert set(report.replay_ids) <= {s.id for s in first}
    assert report.projector and report.projector.endswith("multi_modal_projector")
    # round 2 started from round 1's adapter (same outputs before training) and then moved it
    assert torch.equal(start, _logits(load_student(tiny_llava, adapter=round_1, device="cpu"), later[:4],
                                      tiny_data.root))
    w1, w2 = load_file(round_1 / "adapter_model.safetensors"), load_file(round_2 / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_training_is_deterministic_under_a_seed(tiny_llava, tiny_data, tmp_path):
    config = LoraTrainConfig(**{**FAST, "epochs": 2, "dropout": 0.1}, seed=7)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_lora(load_student(tiny_llava, device="cpu"), tiny_data.samples, tiny_data.root,
                   config.model_copy(update={"seed": seed}), tmp_path / name, progress=False)
    a, b, c = (load_file(tmp_path / n / "adapter_model.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mix_replay_is_seeded_and_disjoint(tiny_data):
    selected, replay = tiny_data.samples[:10], tiny_data.samples[5:] + tiny_data.yes_no
    mixed = mix_replay(selected, replay, 0.5, seed=3)
    assert len(mixed) == 5 and not {s.id for s in mixed} & {s.id for s in selected}
    assert [s.id for s in mixed] == [s.id for s in mix_replay(selected, replay, 0.5, seed=3)]
    assert mix_replay(selected, [], 1.0, seed=3) == []
    assert len(mix_replay(selected, replay, 100.0, seed=3)) == len(replay) - 5


def test_empty_selection_saves_an_untrained_adapter(tiny_llava, tmp_path):
    report = train_lora(load_student(tiny_llava, device="cpu"), [], None, LoraTrainConfig(), tmp_path, progress=False)
    assert report.steps == 0 and report.n_train == 0
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "training.json").exists()


def test_train_full_moves_all_weights_and_saves_a_loadable_model(colour_llava, tiny_llava, tiny_data, tmp_path):
    report = json.loads((colour_llava / "training.json").read_text())
    assert report["mode"] == "full" and report["trainable_params"] == report["total_params"]
    assert report["last_loss"] < report["first_loss"] / 4
    trained, base = load_student(colour_llava, device="cpu"), load_student(tiny_llava, device="cpu")
    assert not torch.equal(_logits(trained, tiny_data.samples[:2], tiny_data.root),
                           _logits(base, tiny_data.samples[:2], tiny_data.root))
    with pytest.raises(ValueError, match="PEFT"):
        peft_student = load_student(tiny_llava, device="cpu")
        train_lora(peft_student, [], None, LoraTrainConfig(), tmp_path / "a", progress=False)
        train_full(peft_student, tiny_data.samples, tiny_data.root, TrainConfig(), tmp_path / "b", progress=False)





def test_lora_teaches_a_new_skill_and_replay_keeps_the_old_one(colour_llava, tiny_data, tmp_path):
    """The colour student cannot say whether a colour is warm or cool; one LoRA round teaches it (the
    colour features are already there), and replayed colour questions keep the colour skill."""
    from tutorloop.training.evaluate import evaluate

    warmth = [make_sample(f"warm-{s.id}", s.image, WARMTH_QUESTION,
                          "warm" if s.reference in {"red", "yellow"} else "cool", "warmth") for s in tiny_data.samples]

    def accuracy(student, samples):
        return evaluate(student, samples, tiny_data.root, progress=False).summary["accuracy"]

    base = load_student(colour_llava, device="cpu")
    assert accuracy(base, warmth) == 0.0
    config = LoraTrainConfig(epochs=20, batch_size=8, lr=5e-3, dropout=0.0, replay_ratio=1.0, seed=0)
    train_lora(base, warmth, tiny_data.root, config, tmp_path, replay=tiny_data.samples, progress=False)
    tuned = load_student(colour_llava, adapter=tmp_path, device="cpu")
    assert accuracy(tuned, warmth) == 1.0
    assert accuracy(tuned, tiny_data.samples) == 1.0


def test_early_stop_trains_while_the_held_out_loss_falls_and_keeps_the_best_epoch(tiny_llava, tiny_data, tmp_path):
    from tutorloop.training.lora import HeldOut

    train, held = tiny_data.samples[::2], tiny_data.samples[1::2]  # each image is drawn twice: one copy each
    config = LoraTrainConfig(**{**FAST, "epochs": 12}, early_stop=True)
    report = train_lora(load_student(tiny_llava, device="cpu"), train, tiny_data.root, config, tmp_path / "a",
                        held_out=HeldOut(held, tiny_data.root), progress=False)
    losses = report.held_out_losses
    assert len(losses) == report.epochs_run + 1  # before training, then after each epoch run
    assert 1 < report.epochs_run < 12 and losses[1] < losses[0]  # it learned, then stopped on its own
    assert report.best_epoch == min(range(1, len(losses)), key=losses.__getitem__)
    assert report.steps == report.epochs_run * -(-len(train) // 8)
    # the saved adapter is the best epoch's, not the last one's
    again = HeldOut(held, tiny_data.root).loss(load_student(tiny_llava, adapter=tmp_path / "a", device="cpu"), 8)
    assert again == pytest.approx(losses[report.best_epoch], rel=1e-5)


def test_a_round_that_can_only_hurt_keeps_its_start(colour_llava, tiny_data, tmp_path):
    from tutorloop.training.lora import HeldOut

    # the student answers colours; training on yes/no with a high lr only hurts the colour answers
    config = LoraTrainConfig(**{**FAST, "epochs": 12, "lr": 2e-2}, early_stop=True)
    held_out = HeldOut(tiny_data.samples[:16], tiny_data.root)
    report = train_lora(load_student(colour_llava, device="cpu"), tiny_data.yes_no, tiny_data.root, config,
                        tmp_path / "a", held_out=held_out, progress=False)
    assert report.epochs_run == 1 and report.best_epoch == 0 and report.kept_start
    assert report.held_out_losses[1] > report.held_out_losses[0]
    saved = json.loads((tmp_path / "a" / "training.json").read_text())
    assert saved["kept_start"] is True
    # the adapter saved is the start: the held-out loss with it is the untouched student's
    after = held_out.loss(load_student(colour_llava, adapter=tmp_path / "a", device="cpu"), 16)
    assert after == pytest.approx(report.held_out_losses[0], rel=1e-5)


def test_max_steps_inside_an_epoch_still_measures_what_it_trained(tiny_llava, tiny_data, tmp_path):
    from tutorloop.training.lora import HeldOut

    config = LoraTrainConfig(**{**FAST, "epochs": 5, "max_steps": 1}, early_stop=True)
    report = train_lora(load_student(tiny_llava, device="cpu"), tiny_data.yes_no, tiny_data.root, config,
                        tmp_path / "a", held_out=HeldOut(tiny_data.samples[:8], tiny_data.root), progress=False)
    assert report.steps == 1 and len(report.held_out_losses) == 2


def test_blend_scales_a_fresh_adapter_exactly(tiny_llava, tiny_data, tmp_path):
    """alpha 0 is the round's start (the untouched student for a fresh adapter), 1 its end, and in between the
    fresh LoRA update B·A is scaled by exactly alpha."""
    import torch

    from tutorloop.training.lora import blend, trainable_weights

    kept = {}

    def finish(student, start):
        kept["start"], kept["end"], kept["model"] = start, trainable_weights(student.model), student.model

    train_lora(load_student(tiny_llava, device="cpu"), tiny_data.yes_no, tiny_data.root,
               LoraTrainConfig(**{**FAST, "lr": 1e-2}), tmp_path / "a", finish=finish, progress=False)
    start, end, model = kept["start"], kept["end"], kept["model"]
    a = next(n for n in start if ".lora_A." in n)
    b = a.replace(".lora_A.", ".lora_B.")
    params = dict(model.named_parameters())
    for alpha in (0.0, 0.25, 1.0):
        blend(model, start, end, alpha)
        torch.testing.assert_close(params[b] @ params[a], alpha * (end[b] @ end[a]))
    blend(model, start, end, 0.0)
    assert all(torch.equal(params[n], start[n]) for n in start if ".lora_A." not in n)


def test_early_stop_without_held_out_samples_is_refused(tiny_llava, tiny_data, tmp_path):
    with pytest.raises(ValueError, match="early_stop needs held-out samples"):
        train_lora(load_student(tiny_llava, device="cpu"), tiny_data.yes_no, tiny_data.root,
                   LoraTrainConfig(**FAST, early_stop=True), tmp_path / "a", progress=False)


def _colour_loss(student_dir, adapter, tiny_data):
    from tutorloop.training.lora import HeldOut

    return HeldOut(tiny_data.samples, tiny_data.root).loss(load_student(student_dir, adapter=adapter, device="cpu"), 16)


def test_anchors_keep_what_the_untouched_student_answers(colour_llava, tiny_data, tmp_path):
    """Training on yes/no wrecks the colour answers (measured: colour loss 0.46 -> 2.73); the same training
    anchored on the colour questions (their untouched answer distributions, not their labels) keeps them
    (-> 0.66) and still learns yes/no (3.04 -> 2.20, against 1.54 unanchored)."""
    from tutorloop.training.lora import Anchors

    config = LoraTrainConfig(**{**FAST, "epochs": 8})
    anchors = Anchors(tiny_data.samples, tiny_data.root)
    plain = train_lora(load_student(colour_llava, device="cpu"), tiny_data.yes_no, tiny_data.root, config,
                       tmp_path / "plain", anchors=anchors, progress=False)  # weight 0: anchors unused
    anchored = train_lora(load_student(colour_llava, device="cpu"), tiny_data.yes_no, tiny_data.root,
                          config.model_copy(update={"anchor_weight": 5.0}), tmp_path / "anchored", anchors=anchors,
                          progress=False)
    assert plain.anchor_kl == [] and plain.anchor_ids == []
    assert len(anchored.anchor_kl) == anchored.steps and anchored.anchor_ids == [s.id for s in tiny_data.samples]
    assert anchored.last_loss < 0.8 * anchored.first_loss  # it still learns the round's task
    before = _colour_loss(colour_llava, None, tiny_data)
    forgot_plain = _colour_loss(colour_llava, tmp_path / "plain", tiny_data) - before
    forgot_anchored = _colour_loss(colour_llava, tmp_path / "anchored", tiny_data) - before
    assert forgot_plain > 1.0 and forgot_anchored < 0.25 * forgot_plain


def test_anchors_need_a_lora_student_in_one_process(tiny_llava, tiny_data, tmp_path):
    from tutorloop.training.lora import Anchors, run_training

    student = load_student(tiny_llava, device="cpu")  # a plain model: there is no untouched copy to ask
    with pytest.raises(ValueError, match="anchors need a LoRA student"):
        run_training(student, tiny_data.yes_no, tiny_data.root, LoraTrainConfig(**FAST, anchor_weight=1.0),
                     anchors=Anchors(tiny_data.samples, tiny_data.root), progress=False)
