"""The quality projection: input vector -> num_tokens quality tokens of the UNet's context width."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .checkpoint import AdapterSpec


class QualityProjection(nn.Module):
    """Linear(input_dim -> T*C) or MLP(input_dim -> inner -> T*C), reshape to [B, T, C], LayerNorm(C)."""

    def __init__(self, spec: AdapterSpec):
        super().__init__()
        out = spec.num_tokens * spec.cross_dim
        if spec.proj_type == "linear":
            self.proj = nn.Linear(spec.input_dim, out)
        else:
            self.proj = nn.Sequential(
                nn.Linear(spec.input_dim, spec.mlp_inner_dim), nn.GELU(), nn.Linear(spec.mlp_inner_dim, out)
            )
        self.norm = nn.LayerNorm(spec.cross_dim)
        self.num_tokens, self.cross_dim = spec.num_tokens, spec.cross_dim

    @classmethod
    def from_state_dict(cls, spec: AdapterSpec, state: Mapping[str, torch.Tensor]) -> "QualityProjection":
        with torch.inference_mode(False):
            module = cls(spec)
            module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return module.eval().requires_grad_(False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(vectors.to(self.norm.weight.dtype))
        return self.norm(tokens.reshape(-1, self.num_tokens, self.cross_dim))
