"""Gradient checkpointing for the host's UNet, added from outside (the host's own flag does not apply here).

Each BasicTransformerBlock and ResBlock forward runs under torch.utils.checkpoint (non-reentrant: it allows
keyword arguments, and gradients reach the adapter's K/V, which enter the blocks from a closure, not as
inputs). The host passes one transformer_options dict down the whole UNet and rewrites its "block" and
"block_index" entries as it goes; a recomputation in the backward pass would read the last values and
look up another layer's patch, silently. So each wrapped call gets a snapshot of that dict. And the
fork's BasicTransformerBlock adds to its input in place (see autograd_safety.py), which would change the
input that the checkpoint keeps for the recomputation: the wrapped function works on a copy of it.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint

WRAPPED = ("BasicTransformerBlock", "ResBlock")


def _snapshot(value):
    return dict(value) if isinstance(value, dict) else value


def _on_copies(forward, *args, **kwargs):
    return forward(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)


def _checkpointed(forward, *args, **kwargs):
    args = tuple(_snapshot(a) for a in args)
    kwargs = {k: _snapshot(v) for k, v in kwargs.items()}
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(_on_copies, forward, *args, use_reentrant=False, **kwargs)


def enable_gradient_checkpointing(unet: torch.nn.Module) -> int:
    """Wrap the UNet's transformer and residual blocks in place; returns how many were wrapped."""
    count = 0
    for module in unet.modules():
        if type(module).__name__ in WRAPPED and not getattr(module, "_iqa_checkpointed", False):
            module.forward = functools.partial(_checkpointed, module.forward)
            module._iqa_checkpointed = True
            count += 1
    return count
