"""Merge a GenzIQA file's LoRA into a UNet's own weights: W += (alpha / rank) * up @ down, what the host's
LoRA loader does when it patches the model. Used on guidance's private copy of the UNet, never on the
model the host shares with the sampler."""

from __future__ import annotations

from typing import Mapping

import torch

from ...adapter.errors import IQAAdapterError
from .file_format import LORA_PROJECTIONS, lora_key
from .layer_selection import attn2_module_paths


@torch.no_grad()
def merge_lora(diffusion_model: torch.nn.Module, lora: Mapping[str, torch.Tensor]) -> int:
    """Add every attn2 projection's LoRA of `lora` (host key format) into `diffusion_model` in place; returns
    how many projections were merged. A LoRA key with no matching layer is an error."""
    modules = dict(diffusion_model.named_modules())
    done: set[str] = set()
    for path in attn2_module_paths(diffusion_model).values():
        for proj in LORA_PROJECTIONS:
            key = lora_key(path, proj)
            down, up = lora.get(key + ".lora_down.weight"), lora.get(key + ".lora_up.weight")
            if down is None or up is None:
                continue
            weight = modules[f"{path}.{proj}"].weight
            alpha = lora.get(key + ".alpha")
            scale = (float(alpha) if alpha is not None else down.shape[0]) / down.shape[0]
            delta = up.float().flatten(1) @ down.float().flatten(1)
            weight += (scale * delta).reshape(weight.shape).to(weight)
            done.add(key)
    left = sorted({k.rsplit(".", 2)[0] for k in lora if k.endswith(".lora_down.weight")} - done)
    if left:
        raise IQAAdapterError(f"The GenzIQA LoRA has layers this UNet lacks ({left[:2]}...): a file for another model.")
    return len(done)
