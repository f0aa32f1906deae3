"""ToyVAE: an exact, parameter-free "autoencoder" (space-to-depth by 8), so the toy model generates pixels.

A learned autoencoder would blur away the noise and JPEG artefacts that the quality metrics measure. With
pixel_unshuffle a 64x64x3 image in [-1, 1] is an 8x8x192 latent, and EmptyLatentImage(64, 64) (zeros,
widened by the host to the model's latent channels) decodes to a 64x64 image: the usual SD convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FACTOR = 8
LATENT_CHANNELS = 3 * FACTOR * FACTOR


class SpaceToDepth(torch.nn.Module):
    """first_stage_model: encode [B,3,H,W] in [-1,1] -> [B,192,H/8,W/8]; decode the inverse (exact)."""

    def __init__(self, factor: int = FACTOR):
        super().__init__()
        self.factor = factor

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(z, self.factor)


class ToyVAE:
    """Duck type of comfy.sd.VAE for VAEDecode/VAEEncode (both hosts) and the pack's guidance decoder."""

    def __init__(self, factor: int = FACTOR):
        self.first_stage_model = SpaceToDepth(factor)
        self.latent_channels = 3 * factor * factor
        self.downscale_ratio = factor
        self.upscale_ratio = factor
        self.spacial_compression = factor
        self.latent_dim = 2
        self.output_channels = 3
        self.device = torch.device("cpu")
        self.vae_dtype = torch.float32
        self.output_device = torch.device("cpu")

    # The host's VAE API ------------------------------------------------------------------------------
    def decode(self, samples: torch.Tensor, **kwargs) -> torch.Tensor:
        """[B,192,h,w] latent -> [B,8h,8w,3] image in [0,1] (channels last, as the host's IMAGE)."""
        img = self.first_stage_model.decode(samples.float().to(self.output_device))
        return ((img + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)

    def encode(self, pixels: torch.Tensor, **kwargs) -> torch.Tensor:
        """[B,H,W,C] image in [0,1] -> [B,192,H/8,W/8] latent (extra channels dropped, size cropped to /8)."""
        f = self.first_stage_model.factor
        h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
        x = pixels[:, :h, :w, :3].float().movedim(-1, 1) * 2.0 - 1.0
        return self.first_stage_model.encode(x)

    def decode_tiled(self, samples: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.decode(samples)

    def encode_tiled(self, pixels: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.encode(pixels)

    def spacial_compression_decode(self) -> int:
        return self.upscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio

    def temporal_compression_decode(self):
        return None

    def vae_encode_crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        f = self.downscale_ratio
        return pixels[:, : (pixels.shape[1] // f) * f, : (pixels.shape[2] // f) * f, :]

    def get_sd(self) -> dict:
        return {}

    def memory_used_decode(self, shape, dtype) -> int:
        return 0

    def memory_used_encode(self, shape, dtype) -> int:
        return 0


def empty_latent(width: int, height: int, batch_size: int = 1, factor: int = FACTOR) -> torch.Tensor:
    """Zeros [B,192,H/8,W/8]: the toy's Empty Latent Image at full channel count. The 2024 fork's
    comfy.sample.fix_empty_latent_channels, which should widen EmptyLatentImage's 4 channels, raises
    NameError (it uses `comfy.utils` without importing `comfy`), so toy workflows start from this."""
    return torch.zeros(batch_size, 3 * factor * factor, height // factor, width // factor)
