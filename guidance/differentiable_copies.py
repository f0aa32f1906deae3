"""Differentiable copies of host decoders and IQA networks, made outside torch.inference_mode.

The prompt runs under torch.inference_mode, so weights loaded by loader nodes are inference tensors and
cannot be saved for backward. materialize() deep-copies a module under inference_mode(False): the copy's
tensors (parameters, buffers and plain tensor attributes alike) are ordinary tensors. The copy never gets
parameter gradients (requires_grad False), and the original is not touched.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Optional

import torch

from .gradient_guidance import DecoderSource, ImageFn, ScoreTerm

# Submodules a decode never runs; left out of the copy (the KL VAE's encoder is 34M parameters).
_ENCODER_NAMES = ("encoder", "taesd_encoder", "quant_conv")


def materialize(module: torch.nn.Module, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
                drop: Iterable[str] = ()) -> torch.nn.Module:
    """A copy of `module` usable by autograd under the host's inference mode; `drop` names children that
    the copy does without (they become None in it, so they are neither copied nor shared)."""
    memo: dict[int, Any] = {}
    for name in drop:
        child = getattr(module, name, None)
        if isinstance(child, torch.nn.Module):
            memo[id(child)] = None  # deepcopy returns the memo entry: the copy's child is None
    with torch.inference_mode(False):
        out = copy.deepcopy(module, memo)
        if device is not None or dtype is not None:
            out = out.to(device=device, dtype=dtype)
        for p in out.parameters():
            p.requires_grad_(False)
        bad = [n for n, t in list(out.named_parameters()) + list(out.named_buffers()) if t.is_inference()]
    if bad:
        raise RuntimeError(f"Could not re-materialize {type(module).__name__} outside inference mode: {bad[:3]}")
    return out.eval()


def vae_decoder(vae: Any, latent_format: Any) -> DecoderSource:
    """The graph's VAE (KL or TAESD, both load as the host's VAE class) as a differentiable decoder.

    The host's VAE.decode runs without grad and clamps; this calls first_stage_model.decode directly on
    latent_format.process_out(x0). Both the KL VAE and TAESD's decode return images in about [-1, 1]
    (TAESD maps its [0,1] output with sub(0.5).mul(2)), so images = clamp((y + 1) / 2, 0, 1): what the
    user will see, and the clamp passes gradients for every pixel inside the range.
    """
    fsm = vae.first_stage_model
    dtype = getattr(vae, "vae_dtype", None) or next(fsm.parameters()).dtype

    def build(device: torch.device) -> ImageFn:
        net = materialize(fsm, device=device, dtype=dtype, drop=_ENCODER_NAMES)

        def decode(x0: torch.Tensor) -> torch.Tensor:
            y = net.decode(latent_format.process_out(x0).to(dtype)).float()
            return ((y + 1.0) / 2.0).clamp(0.0, 1.0)
        return decode

    return DecoderSource(build, int(getattr(vae, "latent_channels", 4)), int(getattr(vae, "upscale_ratio", 8)),
                         type(fsm).__name__)


def pyiqa_term(metric: Any, weight: float = 1.0, stats: Optional[tuple[float, float]] = None,
               name: Optional[str] = None) -> ScoreTerm:
    """A pyiqa InferenceModel (as built by pyiqa.create_metric) as a differentiable score term.

    Calls the metric's network directly, as pyiqa's as_loss mode does (its forward otherwise runs under
    no_grad and asserts the input range), and returns its raw score per image.
    """
    net = metric.net

    def build(device: torch.device) -> ImageFn:
        copy_ = materialize(net, device=device)

        def score(images: torch.Tensor) -> torch.Tensor:
            out = copy_(images)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.reshape(images.shape[0], -1).mean(1)
        return score

    return ScoreTerm(name or metric.metric_name, build, bool(metric.lower_better), float(weight), stats)
