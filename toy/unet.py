"""The toy's denoiser: the host's own UNetModel, run on a finer space-to-depth grid than the latent.

The latent is s2d-8 (8x8x192 for a 64x64 image, ToyVAE). A UNet whose first layer narrows 192 channels to
fewer cannot output all 192 noise components, so under an EPS ODE sampler the missing ones never decay
(and noisy training images, which are full rank, cannot be generated). This subclass re-packs the latent to
s2d-4 (16x16x48: depth-to-space by 8, then space-to-depth by 4, so neighbouring grid cells hold
neighbouring pixels) on entry and back on exit, so a UNet of 64 channels sees every component. Module names stay
the host's (input_blocks, middle_block, output_blocks), so the pack finds the same attn2 sites.

The network predicts eps as a linear estimate plus a learned correction: eps = c(sigma) * x + net(x), with
c(sigma) = sigma * sqrt(1 + sigma^2) / (sigma_data^2 + sigma^2), the least-squares estimate of eps from
xc = (x0 + sigma*eps) / sqrt(1 + sigma^2) when x0 has per-component variance sigma_data^2 (the idea of EDM's
c_skip, Karras et al. 2022, in EPS form). At high noise c -> 1 (eps is almost the scaled input); at low noise
c -> 0, so the net never has to cancel an identity there. Measured on the toy patches
(python -m toy.denoise_check):
- with no skip, eps MSE at sigma 14.6 was still 0.099 after 2000 steps (samples stayed noise);
- with c = 1 at every sigma, 0.0016 after 2750 steps; at low noise the net removed little of the noise
  (x0 RMSE / sigma 0.56 at sigma 0.2, 0.85 at 0.05), and samples are grainy;
- with c(sigma), after 3000 steps: 0.0014 at sigma 14.6, and 0.60 and 0.85 at sigma 0.2 and 0.05, the same
  as with c = 1. So c(sigma) is kept as the principled baseline, not as the cure: the grain comes from
  the low-noise denoising this small net learns in a CPU budget.
A pixel-level refiner (refine > 0 channels in the config) finishes the estimate: three 3x3 convolutions at
the full 64x64 image, in the manner of FFDNet (Zhang et al. 2018), which takes a noise-level map as an
input. It sees the noisy image, the UNet's noise estimate and log sigma as a map, and adds a correction in
the image's own noise units (s * eps, s = sigma / sqrt(1 + sigma^2)), so a small output is a large eps
correction exactly where sigma is small. Why: the UNet's 64 channels see 4x4-pixel cells of 48 components
and cannot pass 48 full-rank noise components through GroupNorm + SiLU; at sigma 0.05-0.2 it removed only
3-20 % of the noise (x0 RMSE / sigma 0.80-0.97 after 800 steps), so under the ODE sampler the noise below
sigma ~ 0.5 barely decayed and every sample stayed grainy. Measured with the refiner: docs/training.md.
The sampler still sees a plain EPS model; sigma comes from the timestep through the host's own discrete
schedule (ModelSamplingDiscrete, the one the toy's BaseModel samples with).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _unet_class():
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    class ToyUNet(UNetModel):
        """UNetModel on the s2d-(vae_factor/repack) grid of the image behind an s2d-vae_factor latent."""

        def __init__(
            self,
            *args,
            repack: int = 2,
            vae_factor: int = 8,
            sigma_data: float = 0.5,
            refine: int = 0,
            refine_attention: int = 0,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.repack, self.vae_factor, self.sigma_data = repack, vae_factor, sigma_data
            context_dim = kwargs.get("context_dim")
            self.refine = Refiner(refine, refine_attention, context_dim) if refine else None
            from comfy.model_sampling import ModelSamplingDiscrete

            # The host's schedule, timestep -> sigma; held outside the module tree, so not in the state dict.
            object.__setattr__(self, "_sampling", ModelSamplingDiscrete())

        def skip(self, timesteps: torch.Tensor) -> torch.Tensor:
            """c(sigma) of the module docstring, per batch item, from the (fractional) timestep."""
            return self._skip_at(self._sampling.sigma(timesteps.float()))

        def _skip_at(self, sigma: torch.Tensor) -> torch.Tensor:
            return sigma * (1 + sigma**2).sqrt() / (self.sigma_data**2 + sigma**2)

        def _to_grid(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
            return F.pixel_unshuffle(F.pixel_shuffle(x, src), dst) if src != dst else x

        def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, **kwargs):
            transformer_options = {} if transformer_options is None else transformer_options
            f, inner = self.vae_factor, self.vae_factor // self.repack
            out = super().forward(
                self._to_grid(x, f, inner),
                timesteps,
                context=context,
                y=y,
                control=control,
                transformer_options=transformer_options,
                **kwargs,
            )
            # sigma once per call, from the timestep, for the skip and the refiner
            sigma = self._sampling.sigma(timesteps.float()).to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
            eps = self._to_grid(out, inner, f) + self._skip_at(sigma) * x  # eps = c(sigma) * input + correction
            if self.refine is None:
                return eps
            s = sigma / (1 + sigma**2).sqrt()  # the input's noise std per unit eps
            px, pe = F.pixel_shuffle(x, f), F.pixel_shuffle(eps * s, f)
            level = (sigma.log() / 4).expand(-1, 1, *px.shape[-2:])
            options = {**transformer_options, "block": REFINER_BLOCK}
            correction = self.refine(torch.cat([px, pe, level], 1), context, options)
            return eps + F.pixel_unshuffle(correction, f) / s

        def extra_attn2_blocks(self) -> list:
            """The pack's binding point for cross-attention outside the host's blocks (adapter/layers.py):
            the refiner's, under the host block key it runs with."""
            attend = getattr(self.refine, "attend", None)
            return [] if attend is None else [(*REFINER_BLOCK, attend)]

    return ToyUNet


# The host block key the refiner's cross-attention runs under: one past the toy's last output block (its
# four output blocks are 0-3), so the pack sees it as the last, finest output layer.
REFINER_BLOCK = ("output", 4)


class Refiner(torch.nn.Sequential):
    """The pixel refiner of the module docstring: [image, noise estimate, log sigma] (7 channels) -> a noise
    correction (3 channels), three 3x3 convolutions; init_weights_ zeroes the last, so it starts as a no-op.

    With attention > 0, a cross-attention block to the text context (RefinerAttention) sits before the
    last convolution, so the pixel-level look is decided by a layer the IQA-Adapter patches: without it
    no adapter reaches the finest scale (measured: docs/training.md, "The second toy world").
    """

    def __init__(self, channels: int, attention: int = 0, context_dim: int | None = None):
        nn = torch.nn
        super().__init__(
            nn.Conv2d(7, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
        if attention:
            self.attend = RefinerAttention(channels, attention, context_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, transformer_options: dict | None = None):
        h = self[3](self[2](self[1](self[0](x))))
        if hasattr(self, "attend"):
            h = self.attend(h, context, transformer_options or {})
        return self[4](h)


class RefinerAttention(torch.nn.Module):
    """A host SpatialTransformer (one block) on the refiner's features, lifted to `width` channels (its
    GroupNorm needs a multiple of 32) and dropped back through a zero-initialised 1x1 convolution, so adding
    it to a trained refiner changes nothing until it is trained. Self-attention is off (attn1 attends to the
    text too): 4096 pixels attending to each other would cost more than the whole UNet."""

    def __init__(self, channels: int, width: int, context_dim: int | None):
        from comfy.ldm.modules.attention import SpatialTransformer

        super().__init__()
        nn = torch.nn
        self.lift = nn.Conv2d(channels, width, 1)
        self.transformer = SpatialTransformer(
            width, 1, width, context_dim=context_dim, disable_self_attn=True, use_linear=True, use_checkpoint=False
        )
        self.drop = nn.Conv2d(width, channels, 1)

    @property
    def transformer_blocks(self):
        return self.transformer.transformer_blocks

    def forward(self, h: torch.Tensor, context: torch.Tensor | None, transformer_options: dict) -> torch.Tensor:
        return h + self.drop(self.transformer(self.lift(h), context=context, transformer_options=transformer_options))


_CLASS = None


def toy_unet_class():
    """The ToyUNet class (built once, after the host is importable)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _unet_class()
    return _CLASS


def init_weights_(unet: torch.nn.Module, seed: int) -> None:
    """Deterministic training init: the host creates weights uninitialized (disable_weight_init ops).
    Kaiming-uniform for weights, zero biases, unit norms; the output conv zeroed, so training starts at
    eps = c(sigma) * input (the skip ToyUNet adds); so is the refiner's, a no-op at the start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound * math.sqrt(3.0))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        refine = getattr(unet, "refine", None)
        lasts = [unet.out[-1]] + ([refine[4]] if refine is not None else [])
        lasts += [refine.attend.drop] if hasattr(refine, "attend") else []
        for last in lasts:
            last.weight.zero_()
            last.bias.zero_()
