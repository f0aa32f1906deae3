"""Embed a reference image as pooled activations of an IQA network, following an EmbeddingSpec.

Forward hooks read the spec's taps; the forward pass stops right after the last tap, so a tap in an
early layer costs only that part of the network. Plain torch: the network is any nn.Module.
"""
from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter.embedding_spec import EmbeddingSpec
from ..adapter.errors import IQAAdapterError

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MIN_REFERENCE_SIDE = 32


class _TapsDone(Exception):
    """Raised from the last tap's hook to end the forward pass early."""


def as_rgb_bchw(images: torch.Tensor) -> torch.Tensor:
    """Host IMAGE [B, H, W, C] in [0, 1] -> [B, 3, H, W]. RGBA drops alpha; greyscale repeats to RGB."""
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    if images.ndim != 4 or images.shape[0] == 0:
        raise IQAAdapterError(f"Reference must be a non-empty IMAGE batch [B, H, W, C], got shape {tuple(images.shape)}.")
    c = images.shape[-1]
    if c == 4:
        images = images[..., :3]
    elif c == 1:
        images = images.expand(-1, -1, -1, 3)
    elif c != 3:
        raise IQAAdapterError(f"Reference has {c} channels; give an RGB, RGBA or greyscale image.")
    h, w = images.shape[1:3]
    if min(h, w) < MIN_REFERENCE_SIDE:
        raise IQAAdapterError(f"Reference is {w}x{h}; it needs at least {MIN_REFERENCE_SIDE} px on each side. Upscale it first.")
    return images.permute(0, 3, 1, 2).float().clamp(0, 1)


def preprocess(images_bchw: torch.Tensor, spec: EmbeddingSpec) -> torch.Tensor:
    x = F.interpolate(images_bchw, size=(spec.resolution, spec.resolution), mode="bilinear", antialias=True, align_corners=False)
    if spec.normalize == "imagenet":
        x = (x - _IMAGENET_MEAN.to(x)) / _IMAGENET_STD.to(x)
    return x


def _pool(feature: torch.Tensor, pooling: str) -> torch.Tensor:
    flat = feature.flatten(2).float()
    mean = flat.mean(dim=2)
    if pooling == "mean":
        return mean
    return torch.cat([mean, flat.std(dim=2, unbiased=False)], dim=1)


def embed_reference(network: nn.Module, images_bchw: torch.Tensor, spec: EmbeddingSpec) -> torch.Tensor:
    """[B, 3, H, W] references in [0, 1] -> [B, spec.dim] embeddings (float32, on the CPU)."""
    modules = dict(network.named_modules())
    for tap in spec.taps:
        if tap not in modules:
            close = difflib.get_close_matches(tap, list(modules), n=3)
            raise IQAAdapterError(f"Embedding spec tap '{tap}' is not a module of the {spec.metric} network." + (f" Did you mean {', '.join(close)}?" if close else ""))
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module, _inputs, output):
            captured[name] = output[0] if isinstance(output, (tuple, list)) else output
            if len(captured) == len(set(spec.taps)):
                raise _TapsDone
        return record

    handles = [modules[t].register_forward_hook(hook(t)) for t in dict.fromkeys(spec.taps)]
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            network(preprocess(images_bchw, spec).to(device))
    except _TapsDone:
        pass
    finally:
        for h in handles:
            h.remove()
    parts = []
    for tap, channels in zip(spec.taps, spec.channels):
        if tap not in captured:
            raise IQAAdapterError(f"The {spec.metric} network never ran tap '{tap}'; the spec does not fit this network.")
        feat = captured[tap]
        if feat.ndim != 4 or feat.shape[1] != channels:
            raise IQAAdapterError(f"Tap '{tap}' gives shape {tuple(feat.shape)}, but the spec says {channels} channels.")
        parts.append(_pool(feat, spec.pooling))
    return torch.cat(parts, dim=1).cpu()
