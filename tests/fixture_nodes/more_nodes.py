"""Test-only stand-ins for the host's model-file loaders, with the same output slots, so that the example
workflows run unchanged (apart from the loader nodes) on the real host without real weights.

- IQATestTinyCheckpoint stands in for CheckpointLoaderSimple: (MODEL, CLIP, VAE), a tiny UNet, a CLIP
  duck type whose tokens are a function of the text (or, with host_clip, the host's own CLIP classes at tiny
  width, for GenzIQA, whose learned prompts go through the real text model), and the host's own VAE class
  around a random TAESD;
- IQATestTinyVAE stands in for VAELoader (the same random TAESD);
- IQATestPatternImage stands in for LoadImage: (IMAGE, MASK), a deterministic synthetic photo-like image;
- IQATestRandomIQAModel stands in for Load IQA Model where a metric's weights are not on the machine: the
  pack's own IQA_MODEL, built with random weights.

Never shipped to users; scripts/workflow_fixtures.py maps the real loaders onto these.
"""

from __future__ import annotations

import functools
import math
import zlib

import torch

from . import tiny_models


class TinyCLIP:
    """What the host's CLIPTextEncode needs from a CLIP: tokenize() and, depending on the host version,
    encode_from_tokens() (the 2024 fork) or encode_from_tokens_scheduled() (upstream since late 2024). The
    embedding is a seeded function of the text, so different prompts give different (but repeatable)
    conditioning."""

    def __init__(self, layout: str, tokens: int = 8):
        self.context_dim = tiny_models.LAYOUTS[layout]["context_dim"]
        self.tokens = tokens

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> str:
        return text

    def encode_from_tokens(self, tokens: str, return_pooled: bool | str = False, return_dict: bool = False):
        g = torch.Generator().manual_seed(zlib.crc32(tokens.encode("utf-8")))
        cond = torch.randn(1, self.tokens, self.context_dim, generator=g)
        pooled = cond.mean(1)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(
        self, tokens: str, unprojected: bool = False, add_dict: dict | None = None, show_pbar: bool = True
    ) -> list:
        """A CONDITIONING list: one [cond, {"pooled_output": ...}] entry (no hooks, so no schedule)."""
        out = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]


@functools.lru_cache(maxsize=4)
def _taesd_state(seed: int) -> dict[str, torch.Tensor]:
    """Random TAESD weights whose decodes are mid-grey images (few pixels clamped), as a state dict."""
    import comfy.taesd.taesd as taesd_mod

    with torch.inference_mode(False):
        net = taesd_mod.TAESD()
        tiny_models.fill_(net, seed)
        with torch.no_grad():
            net.taesd_decoder[-1].bias += 0.5
            net.vae_scale.fill_(1.0)
        return {k: v.detach().clone() for k, v in net.state_dict().items()}


def tiny_vae(seed: int = 5):
    """The host's VAE class around a random TAESD: VAEDecode, VAEEncode and gradient guidance work on it."""
    import comfy.sd

    with torch.inference_mode(False):
        return comfy.sd.VAE(sd=dict(_taesd_state(seed)), device=torch.device("cpu"))


def tiny_host_clip(width: int, seed: int = 3):
    """The host's CLIP (SD1 tokenizer and text model classes) with a 2-layer text model of `width`. Built
    through ClipTarget params, which both the PyPI fork and upstream ComfyUI hand on to the text model."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.sd1_clip as s1
    import comfy.supported_models_base as smb

    cfg = dict(
        hidden_size=width, intermediate_size=2 * width, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        projection_dim=width, model_type="clip_text_model", bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )  # fmt: skip
    # This CPU-only torch has no CUDA; the test host runs without --cpu, and the host's text-encoder device
    # probe asks CUDA unless told, so the CLIP is placed on the CPU here as --cpu would.
    probe, mm.text_encoder_device = mm.text_encoder_device, lambda: torch.device("cpu")
    try:
        with torch.inference_mode(False), torch.no_grad():
            target = smb.ClipTarget(s1.SD1Tokenizer, s1.SD1ClipModel)
            target.params = {"clip_model": s1.SDClipModel, "textmodel_json_config": cfg}
            clip = comfy.sd.CLIP(target)
            tiny_models.fill_(clip.cond_stage_model, seed)
    finally:
        mm.text_encoder_device = probe
    return clip


def write_genziqa(path, layout: str = "sd15", family: str = "sd2", seed: int = 0):
    """An untrained GenzIQA file (random LoRA, so it matters) that fits IQATestTinyCheckpoint(layout,
    host_clip=True): what the example graphs' Load GenzIQA reads in tiny runs."""
    fresh = tiny_models.loaded_pack_module("guidance.genziqa.fresh")
    genziqa = tiny_models.loaded_pack_module("guidance.genziqa")
    if fresh is None:
        raise RuntimeError("write_genziqa needs the IQA-Adapter pack loaded by the host (the tests' conftest does)")
    model, clip = tiny_models.tiny_model(layout, seed), tiny_host_clip(tiny_models.LAYOUTS[layout]["context_dim"])
    genziqa.save_genziqa(
        path, fresh.fresh_file(model, clip, family, up_std=0.05, seed=seed, image_size=64, timesteps=(9, 57))
    )
    return path


class TinyCheckpoint:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    DESCRIPTION = (
        "Stands in for Load Checkpoint: a tiny random UNet, a text-hash CLIP (or the host's CLIP at tiny width) "
        "and a random TAESD VAE (testing only)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layout": (list(tiny_models.LAYOUTS),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            },
            "optional": {"host_clip": ("BOOLEAN", {"default": False})},
        }

    def load(self, layout: str, seed: int, host_clip: bool = False):
        width = tiny_models.LAYOUTS[layout]["context_dim"]
        clip = tiny_host_clip(width) if host_clip else TinyCLIP(layout)
        return tiny_models.tiny_model(layout, seed), clip, tiny_vae()


class TinyVAE:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    DESCRIPTION = "Stands in for Load VAE: a random TAESD in the host's VAE class (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 5, "min": 0, "max": 2**31})}}

    def load(self, seed: int):
        return (tiny_vae(seed),)


def pattern_image(width: int, height: int, seed: int) -> torch.Tensor:
    """A smooth colour field with discs and stripes: edges and texture for IQA metrics to see. [1, H, W, 3]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([0.25 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x * y], -1)
    for _ in range(6):
        cx, cy, r = torch.rand(3, generator=g).tolist()
        colour = torch.rand(3, generator=g)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < (0.05 + 0.2 * r) ** 2).unsqueeze(-1)
        base = torch.where(disc, colour, base)
    stripes = 0.08 * torch.sin(2 * math.pi * 12 * (x + 0.5 * y)).unsqueeze(-1)
    return (base + stripes).clamp(0, 1).unsqueeze(0)


class PatternImage:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load"
    DESCRIPTION = "Stands in for Load Image: a deterministic synthetic picture and an empty mask (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 64, "min": 32, "max": 1024}),
                "height": ("INT", {"default": 64, "min": 32, "max": 1024}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    def load(self, width: int, height: int, seed: int):
        return pattern_image(width, height, seed), torch.zeros(1, height, width)


class RandomIQAModel:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IQA_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = "Stands in for Load IQA Model: the metric's network with random weights (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"metric": ("STRING", {"default": "topiq_nr"})}}

    def load(self, metric: str):
        from . import random_iqa  # imported once the host has loaded the pack

        return (random_iqa.load_random_iqa_model(metric),)  # seeded by the metric's name


NODE_CLASS_MAPPINGS = {
    "IQATestTinyCheckpoint": TinyCheckpoint,
    "IQATestTinyVAE": TinyVAE,
    "IQATestPatternImage": PatternImage,
    "IQATestRandomIQAModel": RandomIQAModel,
}
