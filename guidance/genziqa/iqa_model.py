"""A GenzIQA scorer as the pack's IQA_MODEL, so IQA Score can use it beside the pyiqa metrics.

It offers what IQA Score reads (name, score, lower_better, score_range, stats). IQA Gradient Guidance
takes its scorer's latent gradient (guidance_terms.py); it has no network to tap, so reference embeddings
refuse it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ...adapter.errors import IQAAdapterError
from ...adapter.norm_table import MetricStats
from .scorer import GenzIQAScorer

KIND = "genziqa"


@dataclass(eq=False)
class GenzIQAModel:
    """IQA_MODEL backed by a GenzIQA file on one MODEL/CLIP/VAE. Higher scores are better."""

    scorer: GenzIQAScorer
    name: str
    kind: str = KIND
    lower_better: bool = False
    differentiable: bool = True  # on latents, through scorer.differentiable (guidance_terms.py), not images
    score_range: tuple[float, float] = (0.0, 0.0)  # unknown: depends on the file's training and calibration

    @property
    def stats(self) -> MetricStats | None:
        """Percentiles refer to the file's own training set (its norm_table); None when it has none."""
        return self.scorer.meta.stats

    def __deepcopy__(self, memo: dict) -> "GenzIQAModel":
        return self  # a handle to shared models

    def __repr__(self) -> str:
        return (
            f"GenzIQAModel({self.name}, {len(self.scorer.sites)} layers, {len(self.scorer.meta.timesteps)} timesteps)"
        )

    def score(
        self,
        images: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 0,
        progress: Callable[[int], None] | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """[B] scores on the CPU of images in [0, 1]: host IMAGEs [B, H, W, C] with channels_last=True, else
        NCHW. RGBA drops alpha, greyscale is repeated to RGB."""
        if images.ndim != 4:
            raise IQAAdapterError(f"{self.name} scores image batches; got shape {list(images.shape)}.")
        x = images if channels_last else images.movedim(1, -1)
        if x.shape[-1] == 1:
            x = x.repeat(1, 1, 1, 3)
        if x.shape[-1] < 3:
            raise IQAAdapterError(f"{self.name} needs RGB images; got {x.shape[-1]} channels.")
        x = x[..., :3].float().clamp(0, 1)
        if x.shape[0] == 0:
            raise IQAAdapterError(f"No images for '{self.name}': the batch is empty. Connect at least one image.")
        step = batch_size if batch_size and batch_size > 0 else x.shape[0]
        out = []
        for i in range(0, x.shape[0], step):
            chunk = x[i : i + step]
            out.append(self.scorer.score_images(chunk))
            if progress is not None:
                progress(chunk.shape[0])
        return torch.cat(out)
