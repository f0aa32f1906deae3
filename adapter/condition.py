"""Build a quality condition: targets -> encoded vectors -> tokens -> per-layer K/V, ready to attach."""
from __future__ import annotations

from typing import Optional

from .attention import QualityTokens
from .encoding import encode_quality_vector, negative_quality_vector, unconditional_vector
from .model import IQAAdapter
from .targets import TargetBatch


def quality_tokens(adapter: IQAAdapter, targets: TargetBatch, scale: float,
                   sigma_start: Optional[float] = None, sigma_end: Optional[float] = None,
                   negative_strength: Optional[float] = None) -> QualityTokens:
    """Positive rows from the targets; negative rows are zeros, or -strength * target when enabled."""
    meta = adapter.metadata
    encoded = encode_quality_vector(targets.values, meta.use_flag, meta.pos_encode_L)
    cond = adapter.layer_kv(adapter.tokens(encoded))
    if negative_strength is None:
        negative = unconditional_vector(1, adapter.spec.input_dim)
    else:
        negative = negative_quality_vector(encoded, negative_strength)
    uncond = adapter.layer_kv(adapter.tokens(negative))
    return QualityTokens(cond, uncond, scale, sigma_start, sigma_end, label=f"Quality Condition ({adapter.name})")
