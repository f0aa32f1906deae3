"""Make the host's transformer blocks safe to backpropagate through.

The PyPI fork's BasicTransformerBlock adds each attention output to the residual stream in place
(`x += n`) right after norm1/norm2 read `x`. LayerNorm keeps its input for the backward pass, so once the
adapter's K/V make the stream require gradients, autograd refuses ("modified by an inplace operation").
Upstream ComfyUI writes `x = n + x` and needs nothing. Where the block's source has the in-place add, the
norms get a copy of their input instead, which is what autograd needs and costs one copy per norm.
"""

from __future__ import annotations

import inspect

import torch


def _copy_input(module: torch.nn.Module, args: tuple) -> tuple:
    if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
        return (args[0].clone(), *args[1:])
    return args


def has_inplace_residual(block: torch.nn.Module) -> bool:
    forward = getattr(type(block), "_forward", None) or type(block).forward
    try:
        return "x += n" in inspect.getsource(forward)
    except (OSError, TypeError):
        return True  # source unavailable: assume the in-place add, the copy is always correct


def make_autograd_safe(unet: torch.nn.Module) -> int:
    """Hook norm1/norm2 of every BasicTransformerBlock that adds in place; returns how many blocks."""
    count = 0
    for module in unet.modules():
        if type(module).__name__ == "BasicTransformerBlock" and has_inplace_residual(module):
            for name in ("norm1", "norm2"):
                norm = getattr(module, name, None)
                if norm is not None:
                    norm.register_forward_pre_hook(_copy_input)
            count += 1
    return count
