"""Load a student's processor, without its video half when that half cannot be loaded.

The processors of Qwen2-VL / Qwen2.5-VL / Qwen3-VL, LLaVA-OneVision, SmolVLM and InternVL declare a video
processor, and transformers 5 builds video processors on torchvision: on a machine without it (a CPU box
with PyPI's CPU torch and no matching torchvision) ``AutoProcessor.from_pretrained`` fails for these models
although their image processors have PIL implementations. tutorloop never feeds video, so it then loads
the same processor class with the video processor left out (``image_only``): the image processor, the
tokenizer, the chat template and every image-token rule are the class's own.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any

from transformers import AutoProcessor
from transformers.utils import is_torchvision_available

log = logging.getLogger(__name__)


def load_processor(source: Path | str) -> Any:
    """``AutoProcessor.from_pretrained(source)``; without torchvision, the image-only form of its class."""
    try:
        return AutoProcessor.from_pretrained(str(source))
    except (ImportError, AttributeError, OSError, ValueError) as err:
        if is_torchvision_available():
            raise
        cls = processor_class(source)
        if cls is None or "video_processor" not in inspect.signature(cls.__init__).parameters:
            raise
        log.info("%s: no torchvision, so %s is loaded without its video processor (%s)", source, cls.__name__,
                 type(err).__name__)
        return image_only(cls).from_pretrained(str(source))


def processor_class(source: Path | str) -> type | None:
    """The processor class a saved folder names (processor_config.json, else tokenizer_config.json)."""
    import json

    import transformers

    for name in ("processor_config.json", "tokenizer_config.json"):
        path = Path(source) / name
        if path.exists():
            cls_name = json.loads(path.read_text()).get("processor_class")
            if cls_name and hasattr(transformers, cls_name):
                return getattr(transformers, cls_name)
    return None


class _NoVideo:
    """Stands where a video processor would: SmolVLM's chat template reads its frame defaults even for images."""

    num_frames = None
    fps = None

    def __call__(self, *args, **kwargs):
        raise ValueError("this processor was loaded without its video processor (no torchvision): no video input")


@functools.cache
def image_only(cls: type) -> type:
    """``cls`` with the video processor left out of its sub-processors.

    ``ProcessorMixin`` takes its sub-processors (what it loads, saves and type-checks) and the settings it
    saves from the ``__init__`` signature; this subclass's signature is the class's own minus
    ``video_processor``, and the class's ``__init__`` receives ``None`` for it. A class-level stand-in
    answers the few reads of ``video_processor`` outside video input. The subclass keeps the class's name,
    so a folder it saves names the real class.
    """
    parent_init = cls.__init__
    kept = [p for name, p in inspect.signature(parent_init).parameters.items() if name != "video_processor"]
    # ProcessorMixin reads the parameters from the signature *and* from ``__init__.__code__`` (what
    # ``from_pretrained`` may pass), so the method is written out with the real parameter names.
    source, defaults = [], {}
    for p in kept:
        if p.kind is p.VAR_KEYWORD:
            source.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            source.append(f"*{p.name}")
        elif p.default is p.empty:
            source.append(p.name)
        else:
            defaults[p.name] = p.default
            source.append(f"{p.name}=_defaults[{p.name!r}]")
    names = [p.name for p in kept[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    rest = next((p.name for p in kept if p.kind is p.VAR_KEYWORD), None)
    call = ", ".join([f"{n}={n}" for n in names] + ([f"**{rest}"] if rest else []))
    namespace = {"_defaults": defaults, "_parent_init": parent_init}
    exec(f"def __init__({', '.join(source)}):\n    _parent_init({kept[0].name}, video_processor=None, {call})\n",
         namespace)
    return type(cls.__name__, (cls,), {"__init__": namespace["__init__"], "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                                       "video_processor": _NoVideo()})
