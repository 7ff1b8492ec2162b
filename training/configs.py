"""The training configs and the evaluation defaults, defined once and light to import: the CLI validates
its flags against them before torch is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The evaluation defaults: the loop's config, `tutorloop eval` and every caller take these.
DEFAULT_MATCHER = "vqa"
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_NEW_TOKENS = 16


class TrainConfig(BaseModel):
    """The loop's knobs, shared by LoRA and full training."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(5e-4, gt=0)
    epochs: int = Field(3, gt=0, description="passes over the data; with early_stop, the most")
    early_stop: bool = Field(False, description=(
        "after every epoch measure the mean answer loss on the held-out samples given to training (the loop: "
        "the target's val split); stop once an epoch lowers it by less than min_gain, keep the best epoch's "
        "weights. The lr is constant after the warm-up (warmup_ratio of one epoch): the stop, not a decay "
        "schedule fixed in advance, ends training"))
    min_gain: float = Field(0.01, ge=0, lt=1, description="relative held-out loss drop an epoch must make to count")
    batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0, description="batches per optimizer step")
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    seed: int = 0
    max_tokens_per_batch: int | None = Field(
        None, gt=0, description="build batches by a token budget instead of batch_size: samples sorted by length, "
        "each batch's padded tokens (rows x longest row) <= this, summed over processes when distributed")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="autocast for forward passes: auto = bf16 on a CUDA device that supports it, else fp32")
    gradient_checkpointing: bool = Field(False, description="recompute layer activations in backward (less memory)")
    memory_limit_gb: float | None = Field(
        None, gt=0, description="refuse to train when the memory estimate exceeds this; default: the device's free memory")


class LoraTrainConfig(TrainConfig):
    rank: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target: str | None = Field(None, description="regex over module names (full match) that get LoRA; None: every "
                               "linear layer of the language model, resolved from the model (training/anatomy.py)")
    train_projector: bool = Field(True, description="train the vision-to-text projector fully (modules_to_save)")
    replay_ratio: float = Field(0.5, ge=0, description="replayed earlier samples per selected sample (at most)")
    anchor_weight: float = Field(0.0, ge=0, description=(
        "weight of the anchor term: the KL divergence from the untouched student's next-token distribution to the "
        "trained one's over the answers of anchor samples (pool samples not trained on), added to every step's "
        "loss (Learning without Forgetting). 0: off. Needs anchors (the loop draws them) and a LoRA student"))
    anchor_batch_size: int = Field(8, gt=0, description="anchor samples per step")


class RoundLoraConfig(LoraTrainConfig):
    """The loop's rounds: epochs until the target val split's answer loss stops falling, at most 20.

    A fixed number of epochs suits one round size and one world; the held-out stop trains each round as long as
    its own data helps the target (benchmarks/recipe.py, docs/results.md). ``early_stop: false`` with
    ``epochs: 3`` trains a fixed 3 epochs."""

    epochs: int = Field(20, gt=0, description="the most epochs a round trains (it stops on the held-out loss)")
    early_stop: bool = Field(True, description=TrainConfig.model_fields["early_stop"].description)
    # Off by default: on the learning-forgetting front anchors cost target accuracy that known replay on top of
    # the budget and the operating point keep at the same forgetting (benchmarks/front.py, docs/results.md)
    anchor_weight: float = Field(0.0, ge=0, description=LoraTrainConfig.model_fields["anchor_weight"].description)
    anchor_samples: int = Field(512, gt=0, description=(
        "anchors the loop draws per round (uniformly from the pool samples not trained on) when anchor_weight > 0"))


class LessConfig(BaseModel):
    """The `less` selector: its warm-up adapter and gradient features (training/gradients.py)."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(1024, gt=0, description="random projection's dimension (LESS: 8192 for 7B models)")
    warmup_samples: int = Field(256, gt=0, description=(
        "pool samples the warm-up LoRA trains on: a seeded uniform draw (LESS: 5 % of the pool)"))
    warmup_epochs: int = Field(2, gt=0)
    warmup_lr: float = Field(2e-4, gt=0)
    rank: int = Field(8, gt=0, description="the warm-up LoRA's rank")
    shortlist: int = Field(2048, gt=0, description=(
        "pool samples whose gradients are taken: the whole pool when it is no larger, else this many found by "
        "text retrieval with the failed questions (a gradient per pool sample is the selector's whole cost)"))
    batch_size: int = Field(8, gt=0, description="warm-up batch size")
    seed: int = 0
