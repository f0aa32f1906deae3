"""Embed a reference image as pooled activations of an IQA network, following an EmbeddingSpec.

The taps are read through IQAModel.activations (forward hooks, early stop after the last tap); this module
adds only what the spec defines: the resize, the optional normalization, and the pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..adapter.embedding_spec import EmbeddingSpec
from ..adapter.errors import IQAAdapterError
from .iqa_models import IQAModel, to_rgb_nchw

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def reference_batch(iqa_model: IQAModel, images: torch.Tensor) -> torch.Tensor:
    """Host IMAGE [B, H, W, C] -> RGB [B, 3, H, W] (to_rgb_nchw's conversions), checked as the metric checks
    what it scores: before the resize, which would hide an empty or too small reference."""
    x = to_rgb_nchw(images)
    iqa_model.check_images(x)
    return x


def preprocess(images_bchw: torch.Tensor, spec: EmbeddingSpec) -> torch.Tensor:
    x = F.interpolate(
        images_bchw, size=(spec.resolution, spec.resolution), mode="bilinear", antialias=True, align_corners=False
    )
    if spec.normalize == "imagenet":
        x = (x - _IMAGENET_MEAN.to(x)) / _IMAGENET_STD.to(x)
    return x


def _pool(feature: torch.Tensor, pooling: str) -> torch.Tensor:
    flat = feature.flatten(2).float()
    mean = flat.mean(dim=2)
    if pooling == "mean":
        return mean
    return torch.cat([mean, flat.std(dim=2, unbiased=False)], dim=1)


def embed_reference(iqa_model: IQAModel, images: torch.Tensor, spec: EmbeddingSpec) -> torch.Tensor:
    """Host IMAGE references -> [B, spec.dim] embeddings (float32, on the CPU)."""
    if iqa_model.name != spec.metric:
        raise IQAAdapterError(
            f"The embedding spec '{spec.name}' taps '{spec.metric}', but the IQA model given is "
            f"'{iqa_model.name}'. Load '{spec.metric}' with Load IQA Model."
        )
    feats = iqa_model.activations(preprocess(reference_batch(iqa_model, images), spec), spec.taps)
    parts = []
    for tap, channels in zip(spec.taps, spec.channels):
        feat = feats[tap]
        if feat.ndim != 4 or feat.shape[1] != channels:
            raise IQAAdapterError(
                f"Tap '{tap}' of '{spec.metric}' gives shape {tuple(feat.shape)}, but the spec says {channels} channels."
            )
        parts.append(_pool(feat, spec.pooling))
    return torch.cat(parts, dim=1).cpu()
