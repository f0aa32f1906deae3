"""Tiny models built with the host's own classes, and random IQA-Adapter checkpoints, for tests only.

The block layouts of SD1.5 and SDXL are reproduced at tiny width, so the real layer mapping (16 and 70
cross-attention layers, the middle block included) is exercised in seconds on a CPU.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Sequence

import torch


def _unet_layouts():
    """adapter/unet_layouts.py, loaded by path: plain data, so a second copy beside the pack's is harmless."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "adapter" / "unet_layouts.py"
    spec = importlib.util.spec_from_file_location("iqa_unet_layouts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UNET_LAYOUTS = _unet_layouts()
# The real SD1.5 and SDXL block layouts, with a tiny context width.
LAYOUTS = {name: dict(UNET_LAYOUTS.unet_config(name), context_dim=ctx) for name, ctx in (("sd15", 48), ("sdxl", 64))}


def unet_config(layout: str) -> dict:
    cfg = dict(
        image_size=32,
        **UNET_LAYOUTS.SD_UNET_OPTIONS,
        model_channels=32,
        num_head_channels=16,
        adm_in_channels=None,
        dtype=torch.float32,
    )
    cfg.update(LAYOUTS[layout])
    return cfg


def fill_(module: torch.nn.Module, seed: int) -> None:
    """Deterministic weights: the host creates them uninitialized."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def tiny_model(layout: str = "sd15", seed: int = 0):
    """A ModelPatcher around a tiny host BaseModel (EPS) with the given block layout."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base as smb

    class TinyConfig(smb.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = comfy.latent_formats.SD15
        sampling_settings = {}

    with torch.inference_mode(False):
        model = comfy.model_base.BaseModel(TinyConfig(unet_config(layout)), device=torch.device("cpu"))
        fill_(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


@functools.lru_cache(maxsize=None)
def site_hiddens(layout: str) -> tuple[int, ...]:
    """Hidden size of each attn2 site of tiny_model(layout), in checkpoint order (built once per layout)."""
    model = tiny_model(layout, seed=0)
    return tuple(s.hidden for s in _adapter_core().layers.find_attn2_sites(model.get_model_object("diffusion_model")))


def adapter_state(
    layout: str | None,
    input_dim: int,
    num_tokens: int = 2,
    proj: str = "linear",
    seed: int = 0,
    hiddens: Sequence[int] | None = None,
    cross: int | None = None,
) -> dict[str, torch.Tensor]:
    """A random IQA-Adapter state dict (flat keys) that fits tiny_model(layout), or, with hiddens and cross,
    a model of those layer widths and that context width (the toy's, whose layout adds a refiner layer)."""
    cross = cross or LAYOUTS[layout]["context_dim"]
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    if proj == "linear":
        sd["image_proj.proj.weight"] = torch.randn(num_tokens * cross, input_dim, generator=g) * 0.5
        sd["image_proj.proj.bias"] = torch.randn(num_tokens * cross, generator=g) * 0.1
    else:
        sd["image_proj.proj.0.weight"] = torch.randn(128, input_dim, generator=g) * 0.5
        sd["image_proj.proj.0.bias"] = torch.randn(128, generator=g) * 0.1
        sd["image_proj.proj.2.weight"] = torch.randn(num_tokens * cross, 128, generator=g) * 0.1
        sd["image_proj.proj.2.bias"] = torch.randn(num_tokens * cross, generator=g) * 0.1
    sd["image_proj.norm.weight"] = 1.0 + 0.1 * torch.randn(cross, generator=g)
    sd["image_proj.norm.bias"] = 0.1 * torch.randn(cross, generator=g)
    for n, hidden in enumerate(hiddens or site_hiddens(layout)):
        for kv in ("k", "v"):
            sd[f"ip_adapter.{2 * n + 1}.to_{kv}_ip.weight"] = torch.randn(hidden, cross, generator=g) / cross**0.5
    return sd


def write_adapter(path: Path, layout: str, metadata: dict | None, input_dim: int | None = None, **kw) -> Path:
    """Save a random adapter as safetensors, with metadata in the header (None: no metadata)."""
    from safetensors.torch import save_file

    meta = metadata or {}
    if input_dim is None:
        d = len(meta.get("metrics", [])) + (1 if meta.get("use_flag") else 0)
        input_dim = d * (2 * meta.get("pos_encode_L", 0) + 1)
    sd = adapter_state(layout, input_dim, **kw)
    header = {"iqa_adapter": json.dumps(metadata)} if metadata is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=header)
    return path


def loaded_pack_module(submodule: str):
    """A submodule of the IQA-Adapter pack the host loaded (marked IQA_ADAPTER_PACK), or None if not loaded."""
    import importlib

    for name, mod in list(sys.modules.items()):
        if getattr(mod, "__dict__", {}).get("IQA_ADAPTER_PACK") is True:
            return importlib.import_module(f"{name}.{submodule}")
    return None


def _adapter_core():
    """The pack's adapter/ package: the host-loaded one if present, else imported from the repo by path."""
    import importlib.util

    loaded = loaded_pack_module("adapter")
    if loaded is not None:
        return loaded
    if "iqa_adapter_core" not in sys.modules:
        root = Path(__file__).resolve().parents[2] / "adapter"
        spec = importlib.util.spec_from_file_location(
            "iqa_adapter_core", root / "__init__.py", submodule_search_locations=[str(root)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["iqa_adapter_core"] = module
        spec.loader.exec_module(module)
    return sys.modules["iqa_adapter_core"]


if __name__ == "__main__":  # python tiny_models.py OUT.safetensors [layout]: a random adapter for the demo
    out, lay = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "sd15")
    write_adapter(
        out,
        lay,
        {
            "metrics": ["topiq_nr", "laion_aes"],
            "use_flag": True,
            "pos_encode_L": 0,
            "comment": "random weights, for demos and tests only",
        },
    )
