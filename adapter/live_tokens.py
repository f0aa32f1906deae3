"""Quality tokens for training: K_ip/V_ip recomputed from the tokens on every step, with gradients.

The inference path (attention.QualityTokens) holds K/V computed once without gradients and caches their
casts. Training needs the same attention (DecoupledCrossAttention, so training and inference share one
implementation) fed with K/V that change every step and carry the graph back to to_k_ip/to_v_ip and the
projection. This holder is that feed: the training loop sets the step's LayerKV, then calls the UNet.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .errors import IQAAdapterError
from .model import LayerKV


class LiveQualityTokens:
    """The same kv()/weight() interface as QualityTokens, over the K/V of the current training step.

    Every item of the UNet batch has its own row (no CFG chunks in training), scale 1, no sigma window."""

    label = "IQA-Adapter (training)"

    def __init__(self):
        self.current: Optional[LayerKV] = None

    def __deepcopy__(self, memo: dict) -> "LiveQualityTokens":
        return self

    def set(self, kv: LayerKV) -> None:
        self.current = kv

    def kv(
        self,
        layer: int,
        cond_or_uncond: tuple[int, ...],
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        heads: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.current is None:
            raise IQAAdapterError(
                "The training UNet ran before the step's quality tokens were set (LiveQualityTokens.set)."
            )
        k, v = self.current.keys[layer], self.current.values[layer]
        if k.shape[0] != batch:
            raise IQAAdapterError(f"The step's quality tokens have {k.shape[0]} rows but the UNet batch is {batch}.")
        k, v = k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)
        if heads:
            k, v = (t.view(batch, t.shape[1], heads, -1).transpose(1, 2) for t in (k, v))
        return k, v

    def weight(
        self, extra_options: dict, dtype: torch.dtype, device: torch.device, batch: int = 0, n_tokens: int = 0
    ) -> Union[float, torch.Tensor]:
        return 1.0
