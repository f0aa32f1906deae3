"""Test-only node pack for the reliability tests: the odd inputs a real graph can hand this pack's nodes.

The host's own nodes cannot make some of them (an empty or greyscale IMAGE, NaN pixels, a model with a
16-channel latent, an IQA_SCORES value), so these nodes do, through the same prompt queue as everything
else. Never shipped to users: the reliability tests put this folder into a test host's custom_nodes/.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

IMAGE_KINDS = ("rgb", "rgba", "grey", "grey_alpha", "grey_rgb", "empty", "nan", "inf", "over_range", "clamped")


def rgb_pattern(width: int, height: int, seed: int, batch: int = 1) -> torch.Tensor:
    """A deterministic [B, H, W, 3] picture in [0, 1]: a colour ramp, discs and stripes."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = []
    for _ in range(batch):
        img = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.7 - 0.4 * x * y], -1)
        for _ in range(4):
            cx, cy, r = torch.rand(3, generator=g).tolist()
            disc = ((x - cx) ** 2 + (y - cy) ** 2 < (0.05 + 0.2 * r) ** 2).unsqueeze(-1)
            img = torch.where(disc, torch.rand(3, generator=g), img)
        img = img + 0.06 * torch.sin(2 * math.pi * 9 * (x + 0.3 * y)).unsqueeze(-1)
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def odd_image(kind: str, width: int, height: int, seed: int, batch: int) -> torch.Tensor:
    rgb = rgb_pattern(width, height, seed, batch)
    grey = rgb.mean(-1, keepdim=True)
    alpha = torch.linspace(0, 1, width).expand(batch, height, width).unsqueeze(-1)
    if kind == "rgb":
        return rgb
    if kind == "rgba":
        return torch.cat([rgb, alpha], -1)
    if kind == "grey":
        return grey
    if kind == "grey_alpha":
        return torch.cat([grey, alpha], -1)
    if kind == "grey_rgb":  # what greyscale should be scored as
        return grey.expand(-1, -1, -1, 3).contiguous()
    if kind == "clamped":  # what over_range should be scored as
        return (rgb * 3.0 - 1.0).clamp(0, 1)
    if kind == "empty":
        return rgb[:0]
    if kind == "nan":
        rgb = rgb.clone()
        rgb[:, height // 2, width // 2, 0] = float("nan")
        return rgb
    if kind == "inf":
        rgb = rgb.clone()
        rgb[:, 0, 0, :] = float("inf")
        return rgb
    if kind == "over_range":
        return rgb * 3.0 - 1.0
    raise ValueError(f"unknown kind {kind!r}")


class OddImage:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    DESCRIPTION = "An IMAGE of an odd kind (RGBA, greyscale, empty, NaN pixels, ...) for reliability tests."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "kind": (list(IMAGE_KINDS),),
                "width": ("INT", {"default": 64, "min": 1, "max": 1024}),
                "height": ("INT", {"default": 64, "min": 1, "max": 1024}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "batch": ("INT", {"default": 1, "min": 1, "max": 16}),
            }
        }

    def make(self, kind, width, height, seed, batch):
        return (odd_image(kind, width, height, seed, batch),)


def _tiny_models():
    """The fixture pack's tiny_models module (the copy the host loaded, else imported by path)."""
    for name, mod in list(sys.modules.items()):
        if name.endswith("tiny_models") and hasattr(mod, "write_adapter"):
            return mod
    path = Path(__file__).resolve().parent.parent / "fixture_nodes" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("iqa_reliability_tiny_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_model_16ch(seed: int = 0):
    """A tiny SD1.5-layout UNet whose latents have 16 channels (SD3's latent format): no 4-channel VAE fits it."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base as smb

    tiny = _tiny_models()

    class Config16(smb.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = comfy.latent_formats.SD3
        sampling_settings = {}

    cfg = dict(tiny.unet_config("sd15"), in_channels=16, out_channels=16)
    with torch.inference_mode(False):
        model = comfy.model_base.BaseModel(Config16(cfg), device=torch.device("cpu"))
        tiny.fill_(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


class TinyModel16:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    DESCRIPTION = "A tiny random SD1.5-layout UNet with a 16-channel latent (decoder-mismatch tests)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def build(self, seed):
        return (tiny_model_16ch(seed),)


class Scores:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IQA_SCORES",)
    FUNCTION = "make"
    DESCRIPTION = "An IQA_SCORES value from JSON {metric: [raw score per image]} (reference_scores tests)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"scores": ("STRING", {"default": "{}", "multiline": True})}}

    def make(self, scores):
        return ({str(k): [float(v) for v in vals] for k, vals in json.loads(scores).items()},)


class Probe:
    """Fails unless the MODEL it gets carries no attention patch and no sampler hook: what a plain model is."""

    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "check"
    DESCRIPTION = "Passes a MODEL through after checking that it carries no patch (leak tests)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def check(self, model, nonce):  # nonce: a new value makes the host run the check again
        opts = model.model_options
        replace = opts.get("transformer_options", {}).get("patches_replace", {})
        hooks = [
            k for k in ("sampler_post_cfg_function", "sampler_pre_cfg_function", "sampler_cfg_function") if opts.get(k)
        ]
        if any(replace.values()) or hooks:
            raise RuntimeError(f"patched model leaked: attn replace {sorted(replace)} hooks {hooks}")
        return (model,)


class _InterruptingNet(torch.nn.Module):
    """A differentiable score (mean brightness) that interrupts the host while it scores, as POST /interrupt
    would mid-run: the host raises in the sampler's progress callback right after this guided step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import comfy.model_management

        comfy.model_management.interrupt_current_processing(True)
        return x.mean((1, 2, 3))


class _InterruptingMetric:
    """Shaped like a pyiqa InferenceModel (net, metric_name, lower_better, metric_mode)."""

    metric_name, lower_better, metric_mode = "interrupting", False, "NR"

    def __init__(self):
        self.net = _InterruptingNet()


class InterruptingIQAModel:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IQA_MODEL",)
    FUNCTION = "build"
    DESCRIPTION = "An IQA model whose first guided score interrupts the run (interrupted-guidance tests)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def build(self):
        return (_InterruptingMetric(),)


class GuidanceCopiesProbe:
    """Fails unless the MODEL it gets carries a gradient-guidance hook that has guided, and holds no copies.

    Collects garbage first, as the host's prompt worker does after prompts: on a host without sampling
    wrappers the hook learns that an interrupted run is over when the run's objects are collected."""

    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "check"
    DESCRIPTION = (
        "Checks that a guided MODEL's IQA gradient guidance hook holds no decoder or metric copies (leak tests)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def check(self, model, nonce):
        import gc

        gc.collect()
        hooks = [h for h in model.model_options.get("sampler_post_cfg_function", []) if hasattr(h, "state")]
        if not hooks or not all(h.state.guided for h in hooks):
            raise RuntimeError(f"expected the guidance hook of a run that guided, got {hooks}")
        held = [h.state.copies for h in hooks if h.state.copies]
        if held:
            raise RuntimeError(f"the guidance hook still holds copies after its run: {held[0]}")
        return {"ui": {"text": [f"{len(hooks)} guidance hook(s), guided {[h.state.guided for h in hooks]}, no copies"]}}


NODE_CLASS_MAPPINGS = {
    "IQARelInterruptingIQAModel": InterruptingIQAModel,
    "IQARelGuidanceCopiesProbe": GuidanceCopiesProbe,
    "IQARelOddImage": OddImage,
    "IQARelTinyModel16": TinyModel16,
    "IQARelScores": Scores,
    "IQARelPlainModelProbe": Probe,
}
