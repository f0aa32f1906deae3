"""Test-only node pack: tiny models and conditioning, so graphs run on the real host without real weights.

Never shipped to users: it lives under tests/ and is put into custom_nodes/ only by tests and the demo.
"""

from __future__ import annotations

import torch

from . import tiny_models


class TinyModel:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    DESCRIPTION = "A tiny random UNet with the SD1.5 or SDXL block layout (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layout": (list(tiny_models.LAYOUTS),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    def build(self, layout, seed):
        return (tiny_models.tiny_model(layout, seed),)


class TinyConditioning:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "build"
    DESCRIPTION = "Random text-conditioning tokens of a tiny model's context width (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layout": (list(tiny_models.LAYOUTS),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "tokens": ("INT", {"default": 8, "min": 1, "max": 77}),
            }
        }

    def build(self, layout, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        ctx = tiny_models.LAYOUTS[layout]["context_dim"]
        return ([[torch.randn(1, tokens, ctx, generator=g), {}]],)


class LatentToImage:
    CATEGORY = "IQA-Adapter/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    DESCRIPTION = "A fixed linear latent-to-RGB map with 8x upsampling, standing in for a VAE (testing only)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def decode(self, samples):
        x = samples["samples"].float()
        m = torch.tensor(
            [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
        )
        rgb = torch.einsum("bchw,cr->brhw", x, m)
        rgb = torch.nn.functional.interpolate(rgb, scale_factor=8, mode="bilinear")
        return (((rgb + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous(),)


NODE_CLASS_MAPPINGS = {
    "IQATestTinyModel": TinyModel,
    "IQATestTinyConditioning": TinyConditioning,
    "IQATestLatentToImage": LatentToImage,
}

from . import more_nodes  # noqa: E402  (stand-ins for the host's loaders, used by the example-workflow tests)

NODE_CLASS_MAPPINGS.update(more_nodes.NODE_CLASS_MAPPINGS)
