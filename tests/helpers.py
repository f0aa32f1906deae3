"""Shared test helpers: an independent reference of decoupled attention, UNet runs on the real host, and the
training tests' two-process `accelerate launch`.

The reference is written from the paper and the checkpoint format, not from the pack: its own encoding,
projection and layer table (docs/nodes.md, adapter checkpoints), applied by replacing each attn2 module's forward.
"""

from __future__ import annotations

import importlib
import math
import sys

import conftest
import torch
import torch.nn.functional as F
from prepared_data import NIQE_FILE, NIQE_MAT  # noqa: F401  (scripts/: the NIQE parameters, never committed)

tiny = conftest.fixtures.tiny_models
random_iqa = importlib.import_module(conftest.fixtures.__name__ + ".random_iqa")  # after the pack has loaded
pack = conftest.pack

# `accelerate launch` options for two processes on the CPU (gloo): the training tests' stand-in for two GPUs.
TWO_CPU_PROCESSES = (
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
)


def accelerate_launch(*options: str) -> list[str]:
    """The launcher's command line, from this interpreter (the tests' venv, whatever is on PATH)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *options]


# Checkpoint layer order in host terms (the IP-Adapter format): inputs, outputs, then middle; (block, id, depth).
EXPECTED_SITES = {
    "sd15": [("input", i, 0) for i in (1, 2, 4, 5, 7, 8)]
    + [("output", i, 0) for i in range(3, 12)]
    + [("middle", 0, 0)],
    "sdxl": [("input", i, d) for i in (4, 5) for d in range(2)]
    + [("input", i, d) for i in (7, 8) for d in range(10)]
    + [("output", i, d) for i in (0, 1, 2) for d in range(10)]
    + [("output", i, d) for i in (3, 4, 5) for d in range(2)]
    + [("middle", 0, d) for d in range(10)],
}


def ref_encode(z: torch.Tensor, use_flag: bool, L: int) -> torch.Tensor:
    p = z.float()
    if use_flag:
        p = torch.cat([p, torch.ones(len(p), 1)], 1)
    if not L:
        return p
    sins, coss = [], []
    for i in range(p.shape[1]):
        for k in range(L):
            sins.append(torch.sin(math.pi * 2**k * p[:, i]))
            coss.append(torch.cos(math.pi * 2**k * p[:, i]))
    return torch.cat([p, torch.stack(sins, 1), torch.stack(coss, 1)], 1)


def ref_tokens(sd: dict, vec: torch.Tensor, num_tokens: int) -> torch.Tensor:
    if "image_proj.proj.weight" in sd:
        h = F.linear(vec, sd["image_proj.proj.weight"], sd["image_proj.proj.bias"])
    else:
        h = F.linear(vec, sd["image_proj.proj.0.weight"], sd["image_proj.proj.0.bias"])
        h = F.linear(F.gelu(h), sd["image_proj.proj.2.weight"], sd["image_proj.proj.2.bias"])
    c = sd["image_proj.norm.weight"].shape[0]
    return F.layer_norm(
        h.reshape(len(vec), num_tokens, c), (c,), sd["image_proj.norm.weight"], sd["image_proj.norm.bias"]
    )


def _mha(q, k, v, heads):
    b, n, _ = q.shape

    def sh(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    w = torch.softmax(sh(q) @ sh(k).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads), -1)
    return (w @ sh(v)).transpose(1, 2).reshape(b, n, -1)


def install_reference(model, layout: str, terms: list[tuple[dict, torch.Tensor, float]]):
    """Replace every attn2 forward of a (fresh) host model with reference decoupled attention.

    terms: (state dict, per-row tokens [B, T, C] matching the host batch, scale) per adapter; a scale may be
    a function of the layer's token count giving [B or 1, N, 1] weights (a region mask).
    """
    dm = model.get_model_object("diffusion_model")
    for n, (block, idx, depth) in enumerate(EXPECTED_SITES[layout]):
        blocks = {"input": dm.input_blocks, "output": dm.output_blocks}.get(block)
        seq = dm.middle_block if block == "middle" else blocks[idx]
        transformer = [m for m in seq if hasattr(m, "transformer_blocks")][0]
        attn = transformer.transformer_blocks[depth].attn2

        def forward(x, context=None, value=None, mask=None, attn=attn, n=n):
            q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
            out = _mha(q, k, v, attn.heads)
            for sd, toks, scale in terms:
                wk, wv = sd[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"], sd[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"]
                w = scale(q.shape[1]) if callable(scale) else scale
                out = out + w * _mha(q, toks @ wk.T, toks @ wv.T, attn.heads)
            return attn.to_out(out)

        attn.forward = forward


def run_unet(model, x, context, cond_or_uncond=(0,), sigma=1.0):
    """One raw UNet forward with the model's transformer options, as the host's sampler would pass them."""
    to = dict(model.model_options["transformer_options"])
    to["cond_or_uncond"] = list(cond_or_uncond)
    t = torch.full((x.shape[0],), 500.0)
    to["sigmas"] = torch.full((x.shape[0],), float(sigma))
    with torch.inference_mode():
        return model.get_model_object("diffusion_model")(x, t, context=context, transformer_options=to)


def sample(model, steps: int = 3, size: int = 64, batch: int = 1, seed: int = 3) -> torch.Tensor:
    """Latents from the host's KSampler (euler, cfg 4) on a tiny SD1.5-layout model, inside inference mode as
    in a prompt: the sampler hooks (post-CFG functions) run, unlike in run_unet."""
    from comfy.nodes import base_nodes

    g = torch.Generator().manual_seed(1)
    pos, neg = [[torch.randn(1, 6, 48, generator=g), {}]], [[torch.randn(1, 6, 48, generator=g), {}]]
    latent = {"samples": torch.zeros(batch, 4, size // 8, size // 8)}
    with torch.inference_mode():
        return base_nodes.common_ksampler(model, seed, steps, 4.0, "euler", "normal", pos, neg, latent)[0]["samples"]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| over the whole tensor, in float64."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


# Bound for relative_error between float32 runs of the tiny UNets that take different code paths or batch
# shapes (pack vs reference attention, a batch vs its items, one row vs another of one batch). Rounding
# differs with the kernels' SIMD width, blocking and summation order, and over the UNet's ~30 layers it
# adds up to 1e-6 of the output's norm (measured 4e-8..2e-6 with torch's AVX-512, AVX2 and default kernels,
# oneDNN at AVX2, MKL at AVX2). 1e-4 leaves 50x for other CPUs; what the tests detect (a missing, wrong
# or mixed-up quality term) moves the output by 0.5-0.95 of its norm, 5000x the bound.
UNET_REL_TOL = 1e-4


def assert_relatively_close(got: torch.Tensor, want: torch.Tensor, bound: float = UNET_REL_TOL, what: str = "") -> None:
    """A norm-relative comparison: elementwise tolerances fail on elements near zero, whose rounding error
    is set by the magnitude of the terms summed into them, not by their own magnitude."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = relative_error(got, want)
    assert err <= bound, f"{what}: ||got - want|| / ||want|| = {err:.2e} > {bound:.0e}"


def inputs(layout: str, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ctx = tiny.LAYOUTS[layout]["context_dim"]
    return torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 6, ctx, generator=g)


# At scale 0 every item has the same noise, text conditioning and (zero) quality term, so the sampler
# computes the same numbers for each; only the position of a row inside the batched kernels could change
# their rounding (float32, ~1e-7 relative; measured bitwise equal on the fork, max difference 0). Saved as
# 8-bit PNG, such a difference can at most flip a value that sits on a rounding boundary by one level:
# allow 1 of 255.
SAME_LEVELS = 1


def tiny_clip(width: int, seed: int = 3):
    """The host's CLIP (SD1 tokenizer and text model classes) with a 2-layer text model of `width` (the
    fixture pack's builder, which also runs on upstream ComfyUI)."""
    return conftest.fixtures.more_nodes.tiny_host_clip(width, seed)
