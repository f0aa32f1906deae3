"""The GenzIQA scorer: a host MODEL, CLIP and VAE plus a GenzIQA file -> one quality score per image.

For each timestep t of the file: x_t = x0 + sigma_t * eps with one fixed noise per timestep (shared by
all images, as in the authors' code), the UNet runs once with both prompts (rows: every image with the
good prompt, then every image with the bad one), and
  attention term = mean over the selected attn2 layers of the pooled logits (pooling.py), combined over
                   the two prompts by their mean (the authors' code) or good minus bad;
  noise term     = ||eps - eps_good|| - ||eps - eps_bad|| (L2 over the whole latent).
raw = mean over timesteps of (attention term + noise term); score = a * raw + b (the file's calibration).

The MODEL given is never changed: the LoRA and the attention taps go on a clone.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from ...adapter.errors import IQAAdapterError
from ..differentiable_copies import materialize
from . import host
from .file_format import GenzIQAFile
from .layer_selection import check_family, model_sites
from .lora_merge import merge_lora
from .pooling import LogitRecorder, LogitTap

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clone_saved(t: torch.Tensor) -> torch.Tensor:
    """Keep a copy of saved activations (a saved_tensors_hooks pack function; training's CLIP route uses it too):
    the fork's transformer blocks add residuals in place after a norm
    saved them. Leaves (the weights) are kept as they are, so the UNet is not duplicated."""
    return t if t.grad_fn is None else t.clone()


class GenzIQAScorer:
    """Scores images or latents with one GenzIQA file on one SD-family model."""

    def __init__(self, model: Any, clip: Any, vae: Any, file: GenzIQAFile) -> None:
        meta = file.meta
        self.file, self.meta, self.vae = file, meta, vae
        all_sites = model_sites(model.get_model_object("diffusion_model"))
        check_family(meta.family, meta.context_dim, all_sites, file.name)
        self.sites = meta.layers.resolve(all_sites)
        patched = host.with_lora(model, file.lora, file.name)
        existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
        self.recorder = LogitRecorder()
        for site in self.sites:
            inner = existing.get(site.key) or existing.get(site.key[:2])
            tap = LogitTap(site.key, meta.pooling_lambda, self.recorder, host.host_attention, inner)
            patched.set_model_attn2_replace(tap, *site.key)
        self.patcher = patched
        conds = [host.encode_with_context(clip, text, file.context) for text in meta.prompts]
        width = min(c.shape[1] for c, _ in conds)
        self.context = torch.cat([c[:, :width] for c, _ in conds])  # [2, T, C]: good, bad
        if self.context.shape[-1] != meta.context_dim:
            raise IQAAdapterError(
                f"The CLIP gives {self.context.shape[-1]}-wide text features but {file.name} was made for "
                f"{meta.context_dim}: use the CLIP of the base model the file was made for."
            )
        pooled = [p for _, p in conds]
        self.pooled = None if any(p is None for p in pooled) else torch.cat(pooled)

    # -- images --------------------------------------------------------------------------------------------
    def prepare_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] in [0, 1] -> the pixels handed to the host VAE (resized or cropped, normalized)."""
        if images.ndim != 4 or images.shape[-1] < 3 or images.shape[0] == 0:
            raise IQAAdapterError(f"GenzIQA scores IMAGE batches [B, H, W, 3]; got shape {list(images.shape)}.")
        stride = host.vae_stride(self.vae)
        h, w = images.shape[1:3]
        if min(h, w) < stride:
            raise IQAAdapterError(
                f"Images of {w}x{h} px are smaller than the VAE's latent stride ({stride} px); GenzIQA needs at "
                f"least {stride} px on each side. Upscale them first."
            )
        x = images[..., :3].float()
        size = self.meta.image_size
        if size:
            x = F.interpolate(x.movedim(-1, 1), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1).movedim(1, -1)
        else:
            hh, ww = (h // stride) * stride, (w // stride) * stride
            top, left = (h - hh) // 2, (w - ww) // 2
            x = x[:, top : top + hh, left : left + ww]
        if self.meta.pixel_norm == "clip":  # the authors' VAE input: CLIP mean/std, not [-1, 1]
            mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
            x = ((x - mean) / std + 1.0) / 2.0  # the host then applies 2x - 1
        return x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Model-space latents (after the latent format's process_in) of [B, H, W, 3] images."""
        with torch.no_grad():
            raw = host.vae_encode(self.vae, self.prepare_pixels(images))
        return self.patcher.model.process_latent_in(raw.float())

    def score_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B] calibrated scores of [B, H, W, 3] images in [0, 1], on the CPU."""
        return self.score_latents(self.encode(images)).detach().cpu()

    # -- latents -------------------------------------------------------------------------------------------
    def score_latents(self, latents: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """[B] calibrated scores of model-space latents (what a sampler hook sees as x0). With grad=True the
        result keeps the graph back to `latents`, for guidance."""
        return self.evaluate(latents, grad=grad)["score"]

    def evaluate(self, latents: torch.Tensor, *, grad: bool = False) -> dict[str, torch.Tensor]:
        """Score and its parts, each [B]: attention, noise, raw, score."""
        with self._mode(latents, grad) as device:
            return self._evaluate(latents, device)

    def differentiable(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """A latents -> [B] calibrated scores function with gradients to the latents, for guidance inside a
        prompt. Inside a prompt the UNet's weights are inference tensors, and the host merges weight patches
        into the model it shares with the sampler, so this runs on a copy made here (once per sampling run):
        the model's weights as they are now (the sampler's model, loaded) as ordinary tensors on `device`,
        with the file's LoRA merged into the copy. The shared model is not touched. Each timestep's UNet call
        is checkpointed, so backward holds one call's activations, not one per timestep."""
        base = self.patcher.model
        with torch.inference_mode(False):
            copy = materialize(base, device=device)
            merge_lora(copy.diffusion_model, self.file.lora)
            # ordinary copies of the prompt features (encoded inside the prompt: inference tensors), which the
            # checkpointed calls keep for their recomputation
            prompts = (self.context.clone(), None if self.pooled is None else self.pooled.clone())

        def score(latents: torch.Tensor) -> torch.Tensor:
            self._check_latents(latents, copy)
            with (
                torch.inference_mode(False),
                torch.enable_grad(),
                torch.autograd.graph.saved_tensors_hooks(clone_saved, lambda t: t),
            ):
                several = len(self.meta.timesteps) > 1
                return self._evaluate(latents, device, copy, checkpoint=several, prompts=prompts)["score"]

        return score

    def train_terms(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training's forward, with gradients: one noising per image (timesteps [B] integer schedule indices,
        noise [B, C, h, w]), under the prompts' features `context` [2, T, C] (good, bad) and `pooled` when
        given (trained context vectors carry gradients through them). Returns attention, noise and raw,
        each [B], uncalibrated."""
        with self._mode(latents, True) as device:
            ms = self.patcher.model.model_sampling
            sigmas = ms.sigmas[timesteps.long().cpu()].to(device=device, dtype=torch.float32)
            attention, noise_term = self._terms(
                latents.to(device=device, dtype=torch.float32),
                noise.to(device=device, dtype=torch.float32),
                sigmas,
                self.context if context is None else context,
                self.pooled if pooled is None else pooled,
                device,
            )
        raw = attention + noise_term if self.meta.noise_term else attention
        return {"attention": attention, "noise": noise_term, "raw": raw}

    def _check_latents(self, latents: torch.Tensor, base: Any) -> None:
        # the latent's channels (the toy UNet re-packs its 192-channel latent to 48 inside)
        channels = getattr(getattr(base, "latent_format", None), "latent_channels", None) or getattr(
            base.diffusion_model, "in_channels", latents.shape[1] if latents.ndim == 4 else None
        )
        if latents.ndim != 4 or latents.shape[1] != channels or latents.shape[0] == 0:
            raise IQAAdapterError(
                f"GenzIQA scores latents [B, {channels}, h, w] of this model; got shape {list(latents.shape)}."
            )

    @contextlib.contextmanager
    def _mode(self, latents: torch.Tensor, grad: bool):
        base = self.patcher.model
        self._check_latents(latents, base)
        if grad and any(p.is_inference() for p in base.diffusion_model.parameters()):
            raise IQAAdapterError(
                "GenzIQA gradients need UNet weights that are not inference tensors (a model loaded inside a "
                "prompt's inference mode); score without gradients, or load the model outside inference mode."
            )
        steps = len(base.model_sampling.sigmas)
        if max(self.meta.timesteps) >= steps:
            raise IQAAdapterError(
                f"{self.file.name} uses timestep {max(self.meta.timesteps)}, but the model's schedule has {steps} steps."
            )
        device = host.load_for_compute(self.patcher)
        mode = (
            (
                torch.inference_mode(False),
                torch.enable_grad(),
                torch.autograd.graph.saved_tensors_hooks(clone_saved, lambda t: t),
            )
            if grad
            else (torch.no_grad(),)
        )
        with contextlib.ExitStack() as stack:
            for m in mode:
                stack.enter_context(m)
            yield device

    def _evaluate(
        self,
        latents: torch.Tensor,
        device: torch.device,
        base: Any = None,
        checkpoint: bool = False,
        prompts: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The score and its parts on `base` (default: the model the scorer was made for). checkpoint: keep
        one timestep's UNet activations at a time for backward (recomputed then), not all of them. prompts:
        (context, pooled) to use instead of the scorer's own."""
        base = self.patcher.model if base is None else base
        meta, ms = self.meta, base.model_sampling
        x0 = latents.to(device=device, dtype=torch.float32)
        b = x0.shape[0]
        gen = torch.Generator().manual_seed(meta.noise_seed)
        att_terms, noise_terms = [], []
        for t in meta.timesteps:
            noise = torch.randn(tuple(x0.shape[1:]), generator=gen).to(device)
            sigma = ms.sigmas[int(t)].to(device=device, dtype=torch.float32)
            context, pooled = (self.context, self.pooled) if prompts is None else prompts
            args = (x0, noise.expand(b, *noise.shape), sigma.expand(b), context, pooled, device, base)
            if checkpoint:
                att, nt = torch.utils.checkpoint.checkpoint(self._terms, *args, use_reentrant=False)
            else:
                att, nt = self._terms(*args)
            att_terms.append(att)
            noise_terms.append(nt)
        attention = torch.stack(att_terms).mean(0)
        noise_term = torch.stack(noise_terms).mean(0)
        raw = attention + noise_term if meta.noise_term else attention
        a, c = meta.calibration
        return {"attention": attention, "noise": noise_term, "raw": raw, "score": a * raw + c}

    def _terms(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        context: torch.Tensor,
        pooled: torch.Tensor | None,
        device: torch.device,
        base: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One UNet call on x0 + sigma * noise (per row) under both prompts: the attention and noise terms, [B].
        `base`: the BaseModel to run (default the scorer's; guidance passes its differentiable copy)."""
        meta = self.meta
        base = self.patcher.model if base is None else base
        b = x0.shape[0]
        rows = torch.tensor([0] * b + [1] * b)
        extra = {}
        if getattr(base, "adm_channels", 0) and pooled is not None:
            h, w = x0.shape[-2] * 8, x0.shape[-1] * 8
            y = [
                base.encode_adm(
                    pooled_output=p[None],
                    width=w,
                    height=h,
                    crop_w=0,
                    crop_h=0,
                    target_width=w,
                    target_height=h,
                    device=device,
                )
                for p in pooled
            ]
            extra["y"] = torch.cat(y)[rows].to(device)
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options["cond_or_uncond"] = [0, 0]
        x = x0 + noise * sigmas.view(b, 1, 1, 1)
        xx = torch.cat([x, x])
        sig = torch.cat([sigmas, sigmas])
        options["sigmas"] = sig
        self.recorder.clear()
        try:
            denoised = base.apply_model(
                xx, sig, c_crossattn=context[rows].to(device), transformer_options=options, **extra
            )
            missing = [s.key for s in self.sites if s.key not in self.recorder.values]
            if missing:
                raise IQAAdapterError(
                    f"GenzIQA read no cross-attention at {missing[:3]}: another node replaced those layers' attention "
                    "after this one was set up. Apply the other node first."
                )
            per_row = torch.stack([self.recorder.values[s.key].float() for s in self.sites]).mean(0)
        finally:
            self.recorder.clear()
        good, bad = per_row[:b], per_row[b:]
        attention = (good + bad) / 2 if meta.attention_term == "mean" else good - bad
        eps = ((xx - denoised.float()) / sig.view(2 * b, 1, 1, 1)).flatten(1)
        n = noise.flatten(1)
        return attention, (n - eps[:b]).norm(dim=1) - (n - eps[b:]).norm(dim=1)
