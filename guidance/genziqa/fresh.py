"""A new, untrained GenzIQA file for a model, initialised as the authors' code does: context vectors
N(0, 0.02^2); LoRA rank 4 on attn2 to_q/to_k/to_v/to_out.0 with down N(0, (1/rank)^2) and up zero, so a
fresh file leaves the UNet unchanged. up_std > 0 gives a random up (tests need the LoRA to matter).
"""

from __future__ import annotations

from typing import Any

import torch

from .file_format import LORA_PROJECTIONS, GenzIQAFile, GenzIQAMeta, lora_key
from .host import context_encoders
from .layer_selection import attn2_module_paths, default_selection


def fresh_file(
    model: Any, clip: Any, family: str, *, rank: int = 4, seed: int = 0, up_std: float = 0.0, **meta: Any
) -> GenzIQAFile:
    """An untrained GenzIQA file for MODEL and CLIP (the LoRA on every attn2 layer of the model)."""
    unet = model.get_model_object("diffusion_model")
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    lora: dict[str, torch.Tensor] = {}
    for _key, path in sorted(attn2_module_paths(unet).items(), key=lambda kv: kv[1]):
        for proj in LORA_PROJECTIONS:
            weight = modules[f"{path}.{proj}"].weight
            out_f, in_f = weight.shape[:2]
            base = lora_key(path, proj)
            lora[base + ".lora_down.weight"] = torch.randn(rank, in_f, generator=g) / rank
            lora[base + ".lora_up.weight"] = torch.randn(out_f, rank, generator=g) * up_std
            lora[base + ".alpha"] = torch.tensor(float(rank))
    widths = context_encoders(clip)
    context = {k: torch.randn(16, widths[k], generator=g) * 0.02 for k in sorted(widths)}
    from .layer_selection import model_sites

    ctx_dim = model_sites(unet)[0].context_dim
    meta.setdefault("layers", default_selection(family))
    return GenzIQAFile(GenzIQAMeta(family=family, context_dim=ctx_dim, **meta), context, lora)
