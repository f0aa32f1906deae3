"""Read IP-Adapter-format checkpoints and infer their shape ("spec") from the tensors alone.

Format: safetensors with flat keys "image_proj.*" / "ip_adapter.*", or a torch pickle
{"image_proj": {...}, "ip_adapter": {...}}, which is only ever loaded with weights_only=True.
Projection keys: linear = proj.weight/bias + norm.*; mlp = proj.0.*, proj.2.* + norm.*.
Attention keys: "{k}.to_k_ip.weight" / "{k}.to_v_ip.weight" [hidden, cross_dim] for odd k = 2n + 1, with n
the cross-attention layer index in diffusers processor order (down blocks, up blocks, mid block).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from .errors import IQAAdapterError, load_error_detail
from .unet_layouts import attn2_checkpoint_mults, attn2_layer_count

# Families by their number of cross-attention layers (adapter/unet_layouts.py).
FAMILIES_BY_LAYER_COUNT = {attn2_layer_count(f): f for f in ("sdxl", "sd15")}
FAMILY_NAMES = {"sdxl": "SDXL", "sd15": "SD1.5"}

_IP_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")


@dataclass(frozen=True)
class AdapterSpec:
    """Everything the tensors of a checkpoint say about it."""

    proj_type: str  # "linear" or "mlp"
    num_tokens: int
    input_dim: int
    cross_dim: int
    layer_shapes: tuple[tuple[int, int], ...]  # (hidden, cross_dim) per layer n, in checkpoint order
    mlp_inner_dim: int | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layer_shapes)

    @property
    def family(self) -> str | None:
        return FAMILIES_BY_LAYER_COUNT.get(self.num_layers)

    def describe(self) -> str:
        fam = FAMILY_NAMES.get(self.family or "", "an unknown base model")
        return f"{fam} ({self.num_layers} cross-attention layers, context width {self.cross_dim})"


def load_state_dict(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Load a checkpoint into {"image_proj": {...}, "ip_adapter": {...}} with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise IQAAdapterError(f"IQA-Adapter file not found: {path}. Put it in ComfyUI's models/iqa_adapter folder.")
    if path.stat().st_size == 0:
        raise IQAAdapterError(f"IQA-Adapter file {path.name} is empty (0 bytes). Download it again.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path), device="cpu")
            return split_flat_keys(flat, path.name)
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except IQAAdapterError:
        raise
    except Exception as exc:  # corrupt, truncated or not a tensor file at all
        detail = load_error_detail(exc)
        raise IQAAdapterError(
            f"Could not read {path.name} as an IQA-Adapter checkpoint ({detail}). "
            "The file is truncated, corrupt or not a checkpoint: download it again."
        ) from exc
    if isinstance(obj, Mapping) and "image_proj" in obj and "ip_adapter" in obj:
        return {"image_proj": dict(obj["image_proj"]), "ip_adapter": dict(obj["ip_adapter"])}
    if isinstance(obj, Mapping):
        return split_flat_keys(obj, path.name)
    raise IQAAdapterError(f"{path.name} holds a {type(obj).__name__}, not an IQA-Adapter state dict.")


def split_flat_keys(flat: Mapping[str, torch.Tensor], name: str = "checkpoint") -> dict[str, dict[str, torch.Tensor]]:
    """Turn flat "image_proj.x" / "ip_adapter.x" keys into the nested layout."""
    out: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in out and rest:
            out[head][rest] = value
    if not out["image_proj"] or not out["ip_adapter"]:
        sample = ", ".join(list(flat)[:3])
        raise IQAAdapterError(
            f"{name} is not an IQA-Adapter: it has no 'image_proj.*' and 'ip_adapter.*' keys "
            f"(first keys: {sample or 'none'}). Is it a LoRA or a full model? Pick an IQA-Adapter file."
        )
    return out


def infer_spec(state: Mapping[str, Mapping[str, torch.Tensor]], name: str = "checkpoint") -> AdapterSpec:
    """Read num_tokens, input_dim, cross_dim, projection type and layer shapes from tensor shapes."""
    proj, ip = state["image_proj"], state["ip_adapter"]

    def need(d: Mapping[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
        t = d.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != ndim:
            raise IQAAdapterError(
                f"{name}: image projection key '{key}' is missing or not a {ndim}-D tensor; "
                "this is not an IQA-Adapter in the IP-Adapter format."
            )
        return t

    if any(k == "latents" or k.startswith(("proj_in.", "layers.")) for k in proj):
        raise IQAAdapterError(
            f"{name} is an IP-Adapter Plus file (its image projection is a resampler: keys "
            f"{', '.join(sorted(proj)[:3])}, ...), not an IQA-Adapter. Use it with an IP-Adapter node pack, and pick an "
            "IQA-Adapter file here."
        )
    norm_w = need(proj, "norm.weight", 1)
    cross_dim = norm_w.shape[0]
    inner = None
    if "proj.weight" in proj:
        w = need(proj, "proj.weight", 2)
        proj_type, input_dim, out_dim = "linear", w.shape[1], w.shape[0]
    elif "proj.0.weight" in proj:
        w0, w2 = need(proj, "proj.0.weight", 2), need(proj, "proj.2.weight", 2)
        proj_type, input_dim, inner, out_dim = "mlp", w0.shape[1], w0.shape[0], w2.shape[0]
        if w2.shape[1] != inner:
            raise IQAAdapterError(
                f"{name}: MLP projection layers do not chain ({tuple(w0.shape)} then {tuple(w2.shape)})."
            )
    else:
        raise IQAAdapterError(
            f"{name}: unknown image projection (keys {sorted(proj)[:6]}). Only the 'linear' and 'mlp' "
            "IQA-Adapter projections exist; resampler-style IP-Adapters are not IQA-Adapters."
        )
    if out_dim % cross_dim:
        raise IQAAdapterError(f"{name}: projection output {out_dim} is not a multiple of the token width {cross_dim}.")

    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in ip.items():
        m = _IP_KEY.match(key)
        if m is None:
            raise IQAAdapterError(f"{name}: unexpected adapter key 'ip_adapter.{key}'. This is not an IQA-Adapter.")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = t
    expected = _layer_keys(found, name)
    shapes = []
    for k in expected:
        kv = found[k]
        key_k, key_v = f"ip_adapter.{k}.to_k_ip.weight", f"ip_adapter.{k}.to_v_ip.weight"
        for have, lacks in (("k", key_v), ("v", key_k)):
            if set(kv) == {have}:
                raise IQAAdapterError(
                    f"{name}: '{lacks}' is missing (its partner is {list(kv[have].shape)}). Each layer needs both "
                    "to_k_ip and to_v_ip: the file is incomplete, download it again."
                )
        if kv["k"].ndim != 2 or kv["k"].shape != kv["v"].shape:
            raise IQAAdapterError(
                f"{name}: '{key_k}' is {list(kv['k'].shape)} but '{key_v}' is {list(kv['v'].shape)}; both must be "
                f"[hidden, {cross_dim}] of the same shape. The file is damaged or not an IQA-Adapter: download it again."
            )
        hidden, cd = kv["k"].shape
        if cd != cross_dim:
            raise IQAAdapterError(
                f"{name}: '{key_k}' is {list(kv['k'].shape)}, reading width {cd}, but the quality tokens are "
                f"{cross_dim} wide ('image_proj.norm.weight' is [{cross_dim}]). The file is damaged or mixes two "
                "adapters: download it again."
            )
        shapes.append((int(hidden), int(cd)))
    return AdapterSpec(proj_type, out_dim // cross_dim, int(input_dim), int(cross_dim), tuple(shapes), inner)


def _layout_of(widths: Mapping[int, int]) -> str | None:
    """The family whose layout holds these layers (layer number -> width): every layer at one of its
    positions, the widths in its proportions, and more than half of its layers there."""
    for family in ("sd15", "sdxl"):
        mults = attn2_checkpoint_mults(family)
        if max(widths) >= len(mults) or 2 * len(widths) <= len(mults):
            continue
        n0 = min(widths)
        if all(widths[n] * mults[n0] == widths[n0] * mults[n] for n in widths):
            return family
    return None


def _layer_keys(found: Mapping[int, Mapping[str, torch.Tensor]], name: str) -> list[int]:
    """The attention key indices in order, or an error naming the missing layers.

    The expected range comes from the family's layout (adapter/unet_layouts.py), recognised from the
    layers' widths, so a file that lacks its last layer is refused here rather than later blamed on the
    base model."""
    even = sorted(k for k in found if k % 2 == 0)
    if even:
        raise IQAAdapterError(
            f"{name}: attention keys use odd indices (2n + 1 for layer n), but it has 'ip_adapter.{even[0]}.*'. "
            "This is not an IQA-Adapter in the IP-Adapter format."
        )
    widths = {(k - 1) // 2: int(t.shape[0]) if t.ndim else 0 for k, kv in found.items() for t in kv.values()}
    family = _layout_of(widths)
    count = attn2_layer_count(family) if family else len(found)
    missing = [n for n in range(max(count, max(widths) + 1)) if n not in widths]
    if not missing:
        return [2 * n + 1 for n in range(count)]
    keys = ", ".join(f"ip_adapter.{2 * n + 1}" for n in missing[:6]) + (", ..." if len(missing) > 6 else "")
    ranges = ", ".join(f"{FAMILY_NAMES[f]} 1..{2 * attn2_layer_count(f) - 1}" for f in ("sd15", "sdxl"))
    if family:
        where = (
            f"its layers are the {FAMILY_NAMES[family]} layout's, which has {count} cross-attention layers, "
            f"keys ip_adapter.1 to ip_adapter.{2 * count - 1} (odd indices)"
        )
    else:
        where = f"attention keys run over the odd indices from 1 with no gap ({ranges})"
    raise IQAAdapterError(
        f"{name}: {where}, but layer(s) {', '.join(map(str, missing[:6]))} ({keys}: to_k_ip and to_v_ip) "
        "are missing. The file is incomplete: download it again."
    )


def layer_weights(state: Mapping[str, Mapping[str, torch.Tensor]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """to_k_ip and to_v_ip weights of cross-attention layer n (checkpoint key 2n+1)."""
    ip = state["ip_adapter"]
    return ip[f"{2 * n + 1}.to_k_ip.weight"], ip[f"{2 * n + 1}.to_v_ip.weight"]
