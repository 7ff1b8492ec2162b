"""Where a vision–language model keeps its language model, its vision tower and its projector.

Read from the model itself, not from a table of architectures: transformers 5 models answer
``get_decoder()`` (the language model) and ``get_encoder(modality="image")`` (the vision tower); the
projector is what sits beside them in their common parent (``multi_modal_projector`` in LLaVA, Gemma 3,
PaliGemma, InternVL; ``connector`` in Idefics3/SmolVLM) or, when the architecture keeps it inside the
vision tower (Qwen2-VL's ``visual.merger``, plus Qwen3-VL's ``deepstack_merger_list``), the known projector
modules there. LoRA then targets every linear layer inside the language model and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Projector module names used by the architectures tutorloop knows, for the inside-the-tower case and for
# models that do not answer get_decoder/get_encoder.
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "mm_projector", "merger", "deepstack_merger_list",
                   "aligner", "mlp1")


@dataclass(frozen=True)
class Anatomy:
    language_model: str  # module name of the decoder, e.g. "model.language_model"
    vision_tower: str | None  # e.g. "model.vision_tower", "model.visual", "model.vision_model"
    projectors: tuple[str, ...]  # the vision-to-text modules trained fully with the adapter; main one first
    projections: tuple[str, ...]  # leaf names of the language model's linear layers ("q_proj", ...)

    @property
    def projector(self) -> str | None:
        return self.projectors[0] if self.projectors else None

    @property
    def lora_target(self) -> str:
        """Regex (PEFT full match) for every linear layer of the language model and nothing else."""
        leaves = "|".join(re.escape(p) for p in self.projections)
        return rf"^{re.escape(self.language_model)}\.(?:.*\.)?({leaves})$"


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def anatomy(model: torch.nn.Module) -> Anatomy:
    """The parts of ``model`` (a transformers image-text-to-text model, or a PEFT model wrapping one)."""
    model = base_model(model)
    names = {id(module): name for name, module in model.named_modules()}
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model or id(decoder) not in names:
        raise ValueError(f"{type(model).__name__}: get_decoder() names no language model inside the model")
    language_model = names[id(decoder)]
    encoder = model.get_encoder(modality="image") if hasattr(model, "get_encoder") else None
    vision_tower = names.get(id(encoder)) if encoder is not None and encoder is not model else None
    projections = sorted({name.rsplit(".", 1)[-1] for name, module in decoder.named_modules()
                          if isinstance(module, torch.nn.Linear)})
    if not projections:
        raise ValueError(f"{type(model).__name__}: no linear layer inside the language model {language_model!r}")
    return Anatomy(language_model=language_model, vision_tower=vision_tower,
                   projectors=_projectors(model, language_model, vision_tower), projections=tuple(projections))


def _projectors(model: torch.nn.Module, language_model: str, vision_tower: str | None) -> tuple[str, ...]:
    parent = language_model.rpartition(".")[0]
    holder = model.get_submodule(parent) if parent else model
    prefix = f"{parent}." if parent else ""
    beside = [f"{prefix}{name}" for name, child in holder.named_children()
              if f"{prefix}{name}" not in (language_model, vision_tower) and _has_parameters(child)]
    if vision_tower is not None and (vision_tower.rpartition(".")[0] == parent) and beside:
        return tuple(_expand(model, sorted(beside, key=_rank)))
    inside = [name for name, _ in model.named_modules()
              if name.rsplit(".", 1)[-1] in PROJECTOR_NAMES and not name.startswith(f"{language_model}.")]
    outermost = [n for n in inside if not any(n.startswith(f"{o}.") for o in inside if o != n)]
    return tuple(_expand(model, sorted(outermost, key=_rank)))


def _rank(name: str) -> tuple[int, int, str]:
    """Known projector names first (in PROJECTOR_NAMES order), then by depth."""
    leaf = name.rsplit(".", 1)[-1]
    return (PROJECTOR_NAMES.index(leaf) if leaf in PROJECTOR_NAMES else len(PROJECTOR_NAMES), name.count("."), name)


def _expand(model: torch.nn.Module, names: list[str]) -> list[str]:
    """A ModuleList is indexed, never called, so PEFT can only wrap (and train) its elements."""
    out = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, torch.nn.ModuleList):
            out.extend(f"{name}.{i}" for i in range(len(module)))
        else:
            out.append(name)
    return out


def _has_parameters(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters())


def vision_parameters(model: torch.nn.Module) -> list[str]:
    """Parameter names of the vision tower that are not part of a projector (what LoRA must leave alone)."""
    parts = anatomy(model)
    if parts.vision_tower is None:
        return []
    base = base_model(model)
    projectors = tuple(f"{p}." for p in parts.projectors)
    return [name for name, _ in base.named_parameters()
            if name.startswith(f"{parts.vision_tower}.") and not name.startswith(projectors)]
