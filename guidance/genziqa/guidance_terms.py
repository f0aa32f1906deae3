"""GenzIQA as IQA Gradient Guidance's objective: it reads the latent itself, so the "decoder" is the
identity and the score term runs the UNet (a per-run differentiable copy, GenzIQAScorer.differentiable).
No VAE decode is in the loop, which is what GenzIQA offers over decode-based guidance."""

from __future__ import annotations

from ...adapter.errors import IQAAdapterError
from ..gradient_guidance import DecoderSource, ScoreTerm
from .scorer import GenzIQAScorer


def latent_source(latent_channels: int) -> DecoderSource:
    """The identity 'decoder': the objective sees the model-space latent, one latent pixel per pixel."""
    return DecoderSource(
        lambda device: lambda z: z, latent_channels, upscale_ratio=1, name="the latent itself (GenzIQA, no decode)"
    )


def genziqa_term(scorer: GenzIQAScorer, name: str, weight: float, direction: str) -> ScoreTerm:
    """The scorer as a differentiable term; 'target z-score' needs the file's percentile table."""
    stats = scorer.meta.stats
    if direction == "target z-score" and stats is None:
        raise IQAAdapterError(
            f"direction 'target z-score' needs {name}'s score statistics, and the file has no norm_table. Use "
            "direction 'maximize', or a file trained with python -m training genziqa-train (it writes one)."
        )
    return ScoreTerm(
        name,
        scorer.differentiable,
        lower_better=False,
        weight=weight,
        stats=None if stats is None else (stats.mean, stats.std),
    )
