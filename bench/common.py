"""Shared pieces of the benchmarks: the real host, real-size UNets with random weights, timing."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))  # the folder names the pack and the fixtures are installed under
from workflow_host import FIXTURES_NAME, PACK_NAME  # noqa: E402  (FIXTURES_NAME: tests/fixture_nodes)


def _unet_layouts():
    """adapter/unet_layouts.py, loaded by path (plain data) before the host imports the pack."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("iqa_unet_layouts", REPO / "adapter" / "unet_layouts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_LAYOUTS = _unet_layouts()
# Real-size configs (the host's supported models); weights are random, timing does not need real ones.
CONFIGS = {
    "sdxl": dict(
        model_channels=320,
        **_LAYOUTS.unet_config("sdxl"),
        context_dim=_LAYOUTS.CONTEXT_DIMS["sdxl"],
        num_head_channels=64,
        adm_in_channels=2816,
        num_classes="sequential",
    ),
    "sd15": dict(
        model_channels=320,
        **_LAYOUTS.unet_config("sd15"),
        context_dim=_LAYOUTS.CONTEXT_DIMS["sd15"],
        num_heads=8,
        num_head_channels=-1,
        adm_in_channels=None,
    ),
}


def start_host():
    """Import the real host with this pack (and the test fixtures) in its custom_nodes; returns the pack module."""
    ws = Path(tempfile.mkdtemp(prefix="iqa-bench-"))
    (ws / "custom_nodes").mkdir()
    os.symlink(REPO, ws / "custom_nodes" / PACK_NAME)
    os.symlink(REPO / "tests" / "fixture_nodes", ws / "custom_nodes" / FIXTURES_NAME)
    os.environ["COMFYUI_CWD"] = str(ws)
    from comfy.nodes.package import import_all_nodes_in_workspace

    import_all_nodes_in_workspace()
    return sys.modules[PACK_NAME]


def random_iqa_model(name: str):
    """The pack's IQA_MODEL of `name` with random weights (timing does not need real ones); after start_host."""
    import importlib

    return importlib.import_module(f"{FIXTURES_NAME}.random_iqa").load_random_iqa_model(name)


def real_size_model(kind: str, device: str = "cpu", dtype: str = "float32"):
    """A host ModelPatcher around a real-size UNet (random weights; float32 on the CPU unless told)."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base as smb
    import torch

    class Config(smb.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = comfy.latent_formats.SDXL if kind == "sdxl" else comfy.latent_formats.SD15
        sampling_settings = {}

    cfg = dict(image_size=32, **_LAYOUTS.SD_UNET_OPTIONS, dtype=getattr(torch, dtype), **CONFIGS[kind])
    dev = torch.device(device)
    with torch.inference_mode(False):
        model = comfy.model_base.BaseModel(Config(cfg), device=dev)
        g = torch.Generator(device=dev).manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                bound = 1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.02
                p.uniform_(-bound, bound, generator=g)
    return comfy.model_patcher.ModelPatcher(model, dev, dev)


def unet_step(model, kind: str, latent: int, batch: int = 2) -> Callable[[], None]:
    """One UNet forward with the cfg batch (uncond, cond), as the sampler calls it, on the model's device/dtype."""
    import torch

    dm = model.get_model_object("diffusion_model")
    p = next(dm.parameters())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, latent, latent, generator=g).to(p.device, p.dtype)
    ctx = torch.randn(batch, 77, CONFIGS[kind]["context_dim"], generator=g).to(p.device, p.dtype)
    y = torch.randn(batch, 2816, generator=g).to(p.device, p.dtype) if kind == "sdxl" else None
    t = torch.full((batch,), 500.0, device=p.device)
    to = dict(
        model.model_options["transformer_options"],
        cond_or_uncond=[1, 0],
        sigmas=torch.full((batch,), 5.0, device=p.device),
    )

    def step():
        with torch.inference_mode():
            dm(x, t, context=ctx, y=y, transformer_options=to)

    return step


def wall_seconds(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(
    variants: dict[str, Callable[[], None]],
    rounds: int,
    timer: Callable[[Callable[[], None]], float] = wall_seconds,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per variant (as `timer` measures one call), the variants interleaved round by round so
    drift hits all alike, after `warmup` calls of each."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timer(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def sampler_call(patcher, kind: str, latent: int, sigma: float = 1.0, cfg: float = 7.0) -> Callable[[], None]:
    """One model evaluation as the host's samplers make it (cond+uncond batched, CFG, post-CFG hooks)."""
    import comfy.conds
    import comfy.samplers
    import torch

    p = next(patcher.model.diffusion_model.parameters())
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(1, 4, latent, latent, generator=g) * sigma).to(p.device)
    ctx_dim = CONFIGS[kind]["context_dim"]

    def cond():
        c = {"c_crossattn": comfy.conds.CONDCrossAttn(torch.randn(1, 77, ctx_dim, generator=g).to(p.device))}
        if kind == "sdxl":
            c["y"] = comfy.conds.CONDRegular(torch.randn(1, 2816, generator=g).to(p.device))
        return [{"model_conds": c}]

    pos, neg = cond(), cond()
    s = torch.full((1,), float(sigma), device=p.device)

    def call():
        with torch.inference_mode():
            comfy.samplers.sampling_function(patcher.model, x, s, neg, pos, cfg, patcher.model_options, seed=0)

    return call


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
