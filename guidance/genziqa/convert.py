"""The authors' checkpoint -> a GenzIQA file.

Their training saves the UNet LoRA with diffusers' save_attn_procs (keys like
"down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_q_lora.up.weight", no alpha: scale 1)
and the prompt learner's state dict ("ctx" [16, width], plus token buffers that are rebuilt from the
words). The LoRA names map to host module paths through the host's own LoRA key map. Their self-attention
LoRAs are never trained (up stays zero) and are dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ...adapter.errors import IQAAdapterError
from . import host
from .file_format import LORA_PREFIX, GenzIQAFile, GenzIQAMeta
from .layer_selection import default_selection, model_sites


def from_authors(
    model: Any,
    lora_sd: Mapping[str, torch.Tensor],
    prompt_sd: Mapping[str, torch.Tensor],
    *,
    family: str = "sd2",
    encoder: str = "h",
    **meta: Any,
) -> GenzIQAFile:
    """A GenzIQA file from the authors' LoRA and prompt-learner state dicts, for MODEL (their SD2.1-base)."""
    if "ctx" not in prompt_sd or prompt_sd["ctx"].ndim != 2:
        raise IQAAdapterError("The prompt learner's state dict has no 'ctx' [n_ctx, width] tensor.")
    targets = host.diffusers_lora_targets(model)
    lora: dict[str, torch.Tensor] = {}
    unknown = []
    for key, up in lora_sd.items():
        if not key.endswith("_lora.up.weight"):
            continue
        name = key[: -len("_lora.up.weight")]
        down = lora_sd.get(name + "_lora.down.weight")
        if down is None:
            raise IQAAdapterError(f"LoRA '{key}' has no matching down weight.")
        if name not in targets:
            unknown.append(name)
            continue
        if ".attn1." in name and not up.abs().any():
            continue  # never trained
        base = LORA_PREFIX + targets[name].replace(".", "_")
        lora[base + ".lora_up.weight"] = up.float()
        lora[base + ".lora_down.weight"] = down.float()
        lora[base + ".alpha"] = torch.tensor(float(down.shape[0]))  # alpha / rank = 1, the authors' scale
    if unknown:
        raise IQAAdapterError(f"{len(unknown)} LoRA layers match no layer of this MODEL, e.g. '{unknown[0]}'.")
    meta.setdefault("layers", default_selection(family))
    meta.setdefault("base_model", "sd2.1-base" if family == "sd2" else "")
    ctx_dim = model_sites(model.get_model_object("diffusion_model"))[0].context_dim
    return GenzIQAFile(
        GenzIQAMeta(family=family, context_dim=ctx_dim, **meta), {encoder: prompt_sd["ctx"].float()}, lora
    )
