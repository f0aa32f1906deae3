"""One training step's loss: the frozen UNet's epsilon prediction with the adapter's K/V in every attn2 layer.

The noise is added the way the host samples (x = x0 + sigma * noise, then model_sampling.calculate_input),
at a timestep drawn uniformly from the model's discrete schedule, and the UNet runs with the pack's own
DecoupledCrossAttention as its attn2 replace patch: the code that applies an adapter at inference is the
code that trains it. Only the adapter's parameters get gradients.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from adapter.attention import DecoupledCrossAttention
from adapter.layers import AttnSite
from adapter.live_tokens import LiveQualityTokens
from training.common.draws import Draws


def adapter_patches(sites: list[AttnSite], live: LiveQualityTokens, attention: Callable[..., torch.Tensor]) -> dict:
    """patches_replace for transformer_options: one DecoupledCrossAttention per attn2 site, fed by `live`."""
    return {"attn2": {site.key: DecoupledCrossAttention(((live, n),), attention) for n, site in enumerate(sites)}}


def eps_loss(
    unet: torch.nn.Module,
    model_sampling: Any,
    dtype: torch.dtype,
    adapter: torch.nn.Module,
    live: LiveQualityTokens,
    patches: dict,
    vectors: torch.Tensor,
    latents: torch.Tensor,
    context: torch.Tensor,
    y: Optional[torch.Tensor],
    draws: Draws,
) -> torch.Tensor:
    """MSE between the predicted and the true noise, averaged over the batch (float32)."""
    device = latents.device
    live.set(adapter(vectors))  # through the (DDP-wrapped) adapter, so its gradients are synchronised
    sigma = model_sampling.sigmas.to(device)[draws.timesteps.to(device)].float()
    noise = draws.noise.to(device)
    x = latents + noise * sigma.view(-1, *([1] * (latents.ndim - 1)))
    xc = model_sampling.calculate_input(sigma, x).to(dtype)
    t = model_sampling.timestep(sigma).float()
    options = {"patches_replace": patches, "cond_or_uncond": [0], "sigmas": sigma}
    kwargs = {} if y is None else {"y": y.to(dtype)}
    eps = unet(xc, t, context=context.to(dtype), transformer_options=options, **kwargs)
    return F.mse_loss(eps.float(), noise)
