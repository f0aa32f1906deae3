"""Where a quality term applies: a mask in image space, resized to each cross-attention layer's token grid.

A ComfyUI MASK ([H, W] or [M, H, W], values in [0, 1]) weighs the term per position: 1 applies it fully,
0 not at all, 0.5 at half scale. Each attn2 call sees N = h * w query tokens of a UNet level; the UNet
input grid (the host's transformer_options["original_shape"]) halves with ceil at each level, so the level
is the k with ceil(H / 2^k) * ceil(W / 2^k) = N. The mask is stretched to the image and resized there (each
token takes the mean of the mask pixels it covers; bilinear where the mask is smaller than the grid) and
cached per grid, batch layout, device and dtype, so a step pays one multiply per term.

One mask serves the whole batch, or there is one per batch item; the CFG chunks (cond, uncond) of an item
share its mask. A mask of ones is no mask, and a mask of zeros is scale 0 (condition.py and patching.py
drop both before sampling), so those two cost nothing.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import IQAAdapterError

MAX_LEVELS = 8  # UNet levels searched for a token count; SD and SDXL have 3 or 4
MAX_FINER = 3  # levels above the input grid searched after those (the toy's refiner is 2 above)


def token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the UNet level whose attention sees n_tokens positions, for an input grid height x width.
    Coarser levels first; then finer ones (height * 2^j), for a model that attends above its UNet's grid
    (the toy's pixel refiner, toy/unet.py)."""
    for k in range(MAX_LEVELS):
        h, w = math.ceil(height / 2**k), math.ceil(width / 2**k)
        if h * w == n_tokens:
            return h, w
    for j in range(1, MAX_FINER + 1):
        if height * width * 4**j == n_tokens:
            return height * 2**j, width * 2**j
    raise IQAAdapterError(
        f"A cross-attention layer sees {n_tokens} positions, which no level of a {height}x{width} UNet grid has: "
        "this model does not lay out its attention as the UNet does, so the mask cannot be placed. Remove the "
        "mask from Quality Condition."
    )


class RegionMask:
    """A checked mask [M, H, W] in float32 and its per-layer resized copies."""

    def __init__(self, mask: torch.Tensor, label: str = "mask"):
        self.mask, self.label = mask, label
        self._cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_host(cls, mask: object, label: str = "mask") -> "RegionMask":
        """Check a host MASK: a tensor of [H, W] or [M, H, W], not empty, finite, every value in [0, 1]."""
        if not isinstance(mask, torch.Tensor):
            raise IQAAdapterError(
                f"{label} is a {type(mask).__name__}; connect a MASK (e.g. Load Image's mask output)."
            )
        m = mask.detach().to("cpu", torch.float32)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise IQAAdapterError(
                f"{label} has shape {tuple(mask.shape)}; a MASK is [height, width] or [batch, height, width]. "
                "Convert an image with Image To Mask."
            )
        if m.numel() == 0:
            raise IQAAdapterError(f"{label} is empty (shape {tuple(mask.shape)}); give a mask of at least 1x1 pixel.")
        if not torch.isfinite(m).all():
            raise IQAAdapterError(f"{label} holds NaN or infinite values; rebuild it from an image or a solid mask.")
        lo, hi = float(m.min()), float(m.max())
        if lo < 0.0 or hi > 1.0:
            raise IQAAdapterError(
                f"{label} has values from {lo:g} to {hi:g}; a mask weighs the term from 0 (off) to 1 (full). "
                "Scale it into [0, 1], or use the scale input for a stronger term."
            )
        return cls(m, label)

    @property
    def batch(self) -> int:
        return int(self.mask.shape[0])

    @property
    def all_ones(self) -> bool:
        return bool((self.mask == 1.0).all())

    @property
    def all_zeros(self) -> bool:
        return bool((self.mask == 0.0).all())

    def check_items(self, items: int) -> None:
        """With several target items, the latent batch has that many: the mask must have 1 or `items`."""
        if items > 1 and self.batch not in (1, items):
            raise IQAAdapterError(
                f"{self.label} has {self.batch} masks for {items} target items; give one mask for the whole batch "
                f"or one per item ({items})."
            )

    def weights(
        self,
        n_tokens: int,
        original_shape: Sequence[int] | None,
        cond_or_uncond: tuple[int, ...],
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The mask on this layer's tokens as [batch, N, 1, 1], for a host batch of len(cond_or_uncond) chunks."""
        size = tuple(original_shape[-2:]) if original_shape else None
        key = (n_tokens, size, cond_or_uncond, batch, device, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if size is None:
            raise IQAAdapterError(
                f"{self.label}: the host did not say the latent's shape (transformer_options['original_shape']), so "
                "the mask cannot be placed on this model. Remove the mask."
            )
        h, w = token_grid(n_tokens, *size)
        if h <= self.mask.shape[1] and w <= self.mask.shape[2]:  # each token: the mean of the pixels it covers
            m = F.adaptive_avg_pool2d(self.mask[:, None], (h, w))
        else:
            m = F.interpolate(self.mask[:, None], size=(h, w), mode="bilinear", align_corners=False)
        m = m.clamp(0.0, 1.0).reshape(self.batch, h * w)
        per_chunk = batch // len(cond_or_uncond)
        if self.batch == 1:
            m = m.expand(per_chunk, -1)
        elif self.batch != per_chunk:
            raise IQAAdapterError(
                f"{self.label} has {self.batch} masks but the latent batch is {per_chunk}; give one mask for the whole "
                f"batch or one per latent ({per_chunk})."
            )
        hit = torch.cat([m] * len(cond_or_uncond)).to(device=device, dtype=dtype).view(batch, h * w, 1, 1)
        self._cache[key] = hit
        return hit
