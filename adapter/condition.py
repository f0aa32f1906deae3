"""Build a condition: input vectors -> tokens -> per-layer K/V, ready to attach to a model."""

from __future__ import annotations

from typing import Optional

import torch

from .attention import QualityTokens
from .encoding import encode_quality_vector, negative_quality_vector, unconditional_vector
from .model import IQAAdapter
from .region_mask import RegionMask
from .targets import TargetBatch


def condition_from_vectors(
    adapter: IQAAdapter,
    vectors: torch.Tensor,
    scale: float,
    sigma_start: Optional[float] = None,
    sigma_end: Optional[float] = None,
    negative: Optional[torch.Tensor] = None,
    label: str = "IQA-Adapter",
    rows_name: str = "targets",
    mask: Optional[RegionMask] = None,
) -> QualityTokens:
    """Positive rows from encoded vectors [B, input_dim]; negative rows are zeros unless given. A mask of
    ones is the same as none, and is dropped so that it costs nothing."""
    cond = adapter.layer_kv(adapter.tokens(vectors))
    if negative is None:
        negative = unconditional_vector(1, adapter.spec.input_dim)
    uncond = adapter.layer_kv(adapter.tokens(negative))
    if mask is not None:
        mask.check_items(cond.batch)
        if mask.all_ones:
            mask = None
    return QualityTokens(cond, uncond, scale, sigma_start, sigma_end, label=label, rows_name=rows_name, mask=mask)


def quality_tokens(
    adapter: IQAAdapter,
    targets: TargetBatch,
    scale: float,
    sigma_start: Optional[float] = None,
    sigma_end: Optional[float] = None,
    negative_strength: Optional[float] = None,
    mask: Optional[RegionMask] = None,
) -> QualityTokens:
    """A score-based condition; the negative branch is -strength * target when negative_strength is set; the
    term applies where the mask is (everywhere without one)."""
    meta = adapter.metadata
    encoded = encode_quality_vector(targets.values, meta.use_flag, meta.pos_encode_L)
    negative = None if negative_strength is None else negative_quality_vector(encoded, negative_strength)
    return condition_from_vectors(
        adapter,
        encoded,
        scale,
        sigma_start,
        sigma_end,
        negative,
        label=f"Quality Condition ({adapter.name})",
        rows_name="targets",
        mask=mask,
    )
