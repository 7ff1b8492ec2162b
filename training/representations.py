"""A sample as the student sees it: the RDS+ representation (Ivison et al., 2025) of the `rds` selector.

The last layer's hidden states over the whole formatted conversation — the prompt with its image tokens and
the answer — averaged with weights proportional to position (a causal model's later tokens have read more of
the sample), padding masked, then L2-normalised. Cosine between two such vectors is how alike the student
finds two samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tutorloop.retrieval.records import Sample
from tutorloop.training.student import Student, build_inputs, items_from_samples, length_order


def position_weighted_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, dim): each row's mean of ``hidden`` over its real tokens, the i-th real token weighted i."""
    mask = attention_mask.to(hidden.dtype)
    weights = torch.cumsum(mask, dim=1) * mask  # 1, 2, … over the real tokens; 0 on padding (either side)
    return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def hidden_state_vectors(student: Student, samples: Sequence[Sample], image_root: Path | None, *,
                         batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """(n, hidden size) float32, unit norm: the RDS+ vector of every sample, in the order given."""
    out = np.zeros((len(samples), 0), dtype=np.float32)
    order = length_order([s.question + s.reference for s in samples])  # similar lengths share a batch
    rows: dict[int, np.ndarray] = {}
    model = student.model
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="student vectors", unit="batch",
                          disable=not progress):
            chunk = order[start:start + batch_size]
            batch = build_inputs(student, items_from_samples([samples[i] for i in chunk], image_root,
                                                             with_answer=True))
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states[-1]
            pooled = position_weighted_mean(hidden.float(), batch["attention_mask"])
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            rows.update(zip(chunk, pooled, strict=True))
    finally:
        model.train(was_training)
    if rows:
        out = np.stack([rows[i] for i in range(len(samples))]).astype(np.float32)
    return out
