"""What "near-duplicate" means for an image–instruction sample: same meaning AND same-looking image.

Text alone is wrong for a VQA pool: one question asked of a thousand different images is a thousand
different lessons. So a sample's dedup vector joins its (unit) text embedding with a small centred
thumbnail of its image, each weighted 1/sqrt(2): the cosine of two such vectors is the mean of the text
cosine and the image correlation, and a threshold of 0.97 needs both to be high (the same picture
re-asked in other words, or the same scene moved by a pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tutorloop.retrieval.images import open_image
from tutorloop.retrieval.records import Sample

THUMBNAIL = 8


def image_signature(image_root: Path, image: str | None, side: int = THUMBNAIL) -> np.ndarray:
    """A centred, unit ``side`` x ``side`` RGB thumbnail of the sample's (first) image; zeros when it has no
    readable one."""
    size = side * side * 3
    if image is None:
        return np.zeros(size, dtype=np.float32)
    try:
        with open_image(image_root, image) as opened:
            small = opened.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    except (OSError, ValueError):
        return np.zeros(size, dtype=np.float32)
    pixels = np.asarray(small, dtype=np.float32).reshape(-1)
    pixels -= pixels.mean()
    norm = np.linalg.norm(pixels)
    return pixels / norm if norm > 0 else pixels


def dedup_vectors(samples: Sequence[Sample], text_vectors: np.ndarray, image_root: Path) -> np.ndarray:
    text = text_vectors / np.maximum(np.linalg.norm(text_vectors, axis=1, keepdims=True), 1e-12)
    images = np.stack([image_signature(image_root, s.images[0] if s.images else None) for s in samples])
    return np.hstack([text, images]) / np.sqrt(2.0)
