"""The few named points where GenzIQA reaches the ComfyUI host: prompts with context vectors through the
host's CLIP, the LoRA through the host's LoRA loader, attention patches, model loading and the VAE.

The context vectors go in the way the host applies textual-inversion embeddings: a tensor in the token
list (comfy/sd1_clip.py, SDClipModel.set_up_textual_embeddings) becomes an extra embedding row. A text
encoder that is not the host's CLIP can take them itself (duck typing): it offers
`encode_with_context(text, context) -> (cond [1, T, C], pooled)` and `context_encoders() -> {key: width}`
(the toy world's word table does, toy/text.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ...adapter.errors import IQAAdapterError


def encode_with_context(clip: Any, text: str, context: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """[1, T, C] text features of `text` with the context vectors right after the start token (the
    authors' "X X ... X <words>" with the X embeddings replaced), and the pooled output. A CLIP object with its
    own `encode_with_context` places them itself."""
    if hasattr(clip, "encode_with_context"):
        check_context(clip, context)
        with torch.no_grad():
            cond, pooled = clip.encode_with_context(text, context)
        return cond.float(), pooled
    tokens = _host_tokens(clip, text)
    missing = sorted(set(tokens) - set(context))
    if missing:
        raise IQAAdapterError(
            f"The CLIP has text encoder(s) {', '.join(sorted(tokens))}, but the GenzIQA file has context vectors "
            f"for {', '.join(sorted(context))}. Use the CLIP of the base model the file was made for."
        )
    for key in tokens:
        width = embedding_width(clip, key)
        if width is not None and width != context[key].shape[1]:
            raise IQAAdapterError(
                f"The GenzIQA context vectors for '{key}' are {context[key].shape[1]} wide but the CLIP's embeddings "
                f"are {width}: the file was made for another text encoder."
            )
    out = {}
    for key, batches in tokens.items():
        ctx = context[key].float().cpu()
        row = list(batches[0])
        pad = row[-1]
        n = ctx.shape[0]
        if len(row) < n + 3 or any(t != pad for t in row[-n:]):
            raise IQAAdapterError(f"The GenzIQA prompt '{text}' is too long to fit {n} context vectors in one chunk.")
        out[key] = [[row[0]] + [(v, 1.0) for v in ctx] + row[1:-n]]
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(out, return_pooled=True)
    return cond.float(), pooled


def context_encoders(clip: Any) -> dict[str, int]:
    """{text encoder key: embedding width} of the context vectors the CLIP takes (width 0 when unknown)."""
    if hasattr(clip, "context_encoders"):
        return dict(clip.context_encoders())
    return {k: embedding_width(clip, k) or 0 for k in sorted(_host_tokens(clip, "a"))}


def _host_tokens(clip: Any, text: str) -> dict:
    """The host CLIP's tokens of `text`, per text encoder; anything else is a clear error."""
    tokens = clip.tokenize(text)
    if not isinstance(tokens, dict):
        raise IQAAdapterError("GenzIQA needs the host's CLIP (a text encoder of an SD-family checkpoint).")
    return tokens


def check_context(clip: Any, context: Mapping[str, torch.Tensor]) -> None:
    """The file's context vectors must be the ones a duck-typed text encoder (context_encoders) takes."""
    want = context_encoders(clip)
    got = {k: int(v.shape[1]) for k, v in context.items()}
    if set(want) != set(got) or any(want[k] and want[k] != got[k] for k in want):
        raise IQAAdapterError(
            f"The text encoder takes context vectors {want} ({{key: width}}), but the GenzIQA file has {got}. Use "
            "the CLIP of the base model the file was made for."
        )


def _encoder(clip: Any, key: str) -> Any:
    """The token embedding of the CLIP's encoder `key` (None when it cannot be found)."""
    model = getattr(clip, "cond_stage_model", None)
    enc = getattr(model, f"clip_{key}", None)
    transformer = getattr(enc, "transformer", None)
    try:
        return transformer.get_input_embeddings()
    except AttributeError:
        return None


def embedding_width(clip: Any, key: str) -> int | None:
    emb = _encoder(clip, key)
    return None if emb is None else int(emb.weight.shape[1])


def with_lora(model: Any, lora: Mapping[str, torch.Tensor], name: str) -> Any:
    """A clone of MODEL with the LoRA as weight patches, read by the host's own LoRA loader."""
    import comfy.lora

    clone = model.clone()
    if not lora:
        return clone
    key_map = comfy.lora.model_lora_keys_unet(clone.model, {})
    bases = {k.rsplit(".lora_", 1)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in lora}
    unused = sorted(bases - set(key_map))
    if unused:
        raise IQAAdapterError(
            f"{name}: {len(unused)} LoRA tensors match no layer of this MODEL (e.g. '{unused[0]}'); the file was "
            "made for another UNet."
        )
    weights = clone.model.state_dict()
    for base in sorted(bases):
        up, down = lora.get(base + ".lora_up.weight"), lora.get(base + ".lora_down.weight")
        target = weights.get(key_map[base])
        if up is None or down is None or target is None:
            continue
        if (up.shape[0], down.shape[1]) != tuple(target.shape[:2]):
            raise IQAAdapterError(
                f"{name}: LoRA '{base}' is [{up.shape[0]}, {down.shape[1]}] but the MODEL's weight is "
                f"{list(target.shape)}; the file was made for another UNet."
            )
    patches = comfy.lora.load_lora(dict(lora), key_map)
    applied = clone.add_patches(patches, 1.0)
    if len(applied) != len(patches):
        raise IQAAdapterError(f"{name}: the host applied {len(applied)} of {len(patches)} LoRA weights.")
    return clone


def load_for_compute(patcher: Any) -> torch.device:
    """Load MODEL (with its weight patches) onto its compute device the way the samplers do."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    return patcher.load_device


def host_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(q, k, v, heads)


def vae_encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents of [B, H, W, 3] pixels (the host maps them to [-1, 1] as 2x - 1)."""
    return vae.encode(pixels)


def vae_stride(vae: Any) -> int:
    return int(getattr(vae, "downscale_ratio", 8))


def diffusers_lora_targets(model: Any) -> dict[str, str]:
    """diffusers attention-processor LoRA names ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_q")
    -> host module paths ("input_blocks.1.1.transformer_blocks.0.attn2.to_q"), from the host's own LoRA key map."""
    import comfy.lora

    out = {}
    for key, target in comfy.lora.model_lora_keys_unet(model.model, {}).items():
        if ".processor." in key and not key.startswith("unet.") and target.startswith("diffusion_model."):
            out[key] = target[len("diffusion_model.") : -len(".weight")]
    return out
