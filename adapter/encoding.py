"""The adapter's input vector, encoded exactly as the official training script builds it.

Order of operations (train_iqa_adapter.py of the official repository; facts, not code, carried over):
  1. values = the metrics' targets in the adapter's metric order (z-scores when normalized);
  2. if use_flag: append the constant 1.0, so d' = d + 1;
  3. if pos_encode_L = L > 0: [p, sin(pi * 2^k * p_i), cos(pi * 2^k * p_i)] with k = 0..L-1, the sines
     of every input (input-major, frequency-minor) before all cosines: size d' * (2L + 1).
The unconditional input is the all-zeros vector of the final size: training's CFG dropout zeroed the
vector after encoding, so it is not encode(0).
"""

from __future__ import annotations

import math

import torch

from .errors import IQAAdapterError


def encoded_dim(num_metrics: int, use_flag: bool, pos_encode_L: int) -> int:
    """Size of the encoded vector, which must equal the checkpoint's input_dim."""
    d = num_metrics + (1 if use_flag else 0)
    return d * (2 * pos_encode_L + 1)


def encode_quality_vector(values: torch.Tensor, use_flag: bool, pos_encode_L: int) -> torch.Tensor:
    """Encode [B, d] target values into the [B, input_dim] vectors the projection expects."""
    if values.ndim != 2:
        raise ValueError(f"values must be [batch, metrics], got shape {tuple(values.shape)}")
    p = values.to(torch.float32)
    if use_flag:
        p = torch.cat([p, torch.ones(p.shape[0], 1)], dim=1)
    if pos_encode_L <= 0:
        return p
    freqs = math.pi * torch.pow(2.0, torch.arange(pos_encode_L, dtype=torch.float32))
    args = (p[:, :, None] * freqs[None, None, :]).reshape(p.shape[0], -1)
    return torch.cat([p, torch.sin(args), torch.cos(args)], dim=1)


def unconditional_vector(batch: int, input_dim: int) -> torch.Tensor:
    """The CFG-negative input: zeros, as in training's condition dropout."""
    return torch.zeros(batch, input_dim)


def negative_quality_vector(encoded: torch.Tensor, strength: float) -> torch.Tensor:
    """The optional 'negative quality guidance' input: -strength times the encoded target vector.

    The official inference code scales the vector it feeds to the projection, i.e. the encoded one.
    """
    if not math.isfinite(strength):  # the API can send NaN past the widget's min/max; NaN tokens blank the image
        raise IQAAdapterError(f"negative_strength is {strength}; give a finite number (official 0.5).")
    return -float(strength) * encoded
