"""IQA Gradient Guidance: steer sampling with the gradient of IQA scores of the decoded x0 estimate."""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

from ..adapter import IQAAdapterError, default_norm_table, final_sigma, sigma_window
from ..guidance.differentiable_copies import PRECISIONS, pyiqa_term, vae_decoder
from ..guidance.genziqa.guidance_terms import genziqa_term, latent_source
from ..guidance.gradient_guidance import (
    DIRECTIONS,
    NORMALIZATIONS,
    SIGMA_WEIGHTINGS,
    GradientGuidance,
    GuidanceConfig,
    ScoreTerm,
)
from ..guidance.metric_specs import METRICS
from . import host
from .schedule import check_schedule

log = logging.getLogger(__name__)


def _is_genziqa(iqa_model: Any) -> bool:
    return getattr(iqa_model, "kind", None) == "genziqa"


def _pyiqa_metric(iqa_model: Any) -> Any:
    """The pyiqa InferenceModel inside an IQA_MODEL (a bare pyiqa metric is taken as it is)."""
    if _is_genziqa(iqa_model):
        raise IQAAdapterError(
            f"{iqa_model.name} is a GenzIQA scorer, which guides on the latent without a decode; it cannot be mixed "
            "with decoded-image metrics. Connect it alone, as iqa_model."
        )
    inner = getattr(iqa_model, "metric", None)
    if inner is not None and hasattr(inner, "net"):
        return inner
    if hasattr(iqa_model, "net") and hasattr(iqa_model, "lower_better"):
        return iqa_model
    raise IQAAdapterError(f"iqa_model is a {type(iqa_model).__name__}, not an IQA model; connect Load IQA Model.")


def score_term(iqa_model: Any, weight: float, direction: str, precision: str = "auto") -> ScoreTerm:
    """The IQA_MODEL as a differentiable objective term, with clear errors for what cannot be guided."""
    metric = _pyiqa_metric(iqa_model)
    name = str(getattr(iqa_model, "name", None) or getattr(metric, "metric_name", "metric"))
    differentiable = getattr(iqa_model, "differentiable", None)
    if differentiable is None:  # a bare pyiqa metric: the pack's metric table knows
        spec = METRICS.get(name)
        differentiable = spec.differentiable if spec is not None else True
    if not differentiable:
        raise IQAAdapterError(
            f"IQA metric '{name}' is not differentiable, so it cannot guide sampling. "
            "Use a differentiable metric (niqe, brisque, topiq_nr, musiq, clipiqa, liqe, laion_aes, ...)."
        )
    if getattr(metric, "metric_mode", "NR") != "NR":
        raise IQAAdapterError(
            f"IQA metric '{name}' needs a reference image; gradient guidance needs a no-reference metric."
        )
    table = default_norm_table()
    found = getattr(iqa_model, "stats", None) or (table.get(name) if name in table else None)
    stats = (found.mean, found.std) if found is not None else None
    if direction == "target z-score" and stats is None:
        raise IQAAdapterError(
            f"direction 'target z-score' needs the normalization statistics of '{name}', which the "
            f"table does not have (it has: {', '.join(table.names())}). Use direction 'maximize'."
        )
    return pyiqa_term(metric, weight, stats, name, precision)


class IQAGradientGuidance:
    DESCRIPTION = (
        "Steers sampling with the gradient of an IQA score (the paper's gradient-guidance baseline). At every "
        "guided step the denoised latent is decoded with gradients, scored, and moved along the per-item "
        "normalized gradient. Maximize raises quality, 'target z-score' pulls the score toward a z-score of the "
        "CC3M table (low targets degrade). High scales produce metric-specific adversarial patterns: a probe "
        "of a metric's robustness as much as a quality tool. With a GenzIQA model (Load GenzIQA) the latent "
        "itself is scored, by the diffusion model, with no decode."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the guidance as a post-CFG sampler hook.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to guide. It is cloned, never changed."}),
                "iqa_model": (
                    "IQA_MODEL",
                    {
                        "tooltip": "From Load IQA Model (differentiable, no-reference), or from Load GenzIQA, which "
                        "guides on the latent itself with no decode (then alone, and the VAE is not used)."
                    },
                ),
                "vae": (
                    "VAE",
                    {
                        "tooltip": "Decoder used for the gradient: the graph's VAE, or TAESD (VAE Loader 'taesd'/'taesdxl', "
                        "files in models/vae_approx) for speed. Its latent channels must match the model's. Not used "
                        "with GenzIQA."
                    },
                ),
                "scale": (
                    "FLOAT",
                    {
                        "default": 0.1,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Step size in x0 space, in units of the latent's RMS per guided step (with rms "
                        "normalization). 0 turns guidance off. Above ~0.5 expect adversarial patterns.",
                    },
                ),
                "start_percent": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the schedule where guidance starts (0 = first step).",
                    },
                ),
                "end_percent": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the schedule where guidance stops (1 = last step).",
                    },
                ),
                "every_n_steps": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 100,
                        "tooltip": "Guide one model evaluation in N inside the window (1 = all), to save time.",
                    },
                ),
                "direction": (
                    list(DIRECTIONS),
                    {
                        "default": "maximize",
                        "tooltip": "maximize: push the score toward better. target z-score: pull the score's "
                        "z-score (CC3M table) toward target_z; a low target degrades.",
                    },
                ),
                "target_z": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": -5.0,
                        "max": 5.0,
                        "step": 0.05,
                        "tooltip": "Target z-score of the raw metric score, used only by 'target z-score' "
                        "(topiq_nr p99 is 2.01). The metric must be in the normalization table.",
                    },
                ),
                "max_decode_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 0,
                        "max": 4096,
                        "step": 64,
                        "tooltip": "Cap on the long side (px) of the image decoded for the gradient; the latent is "
                        "downscaled (differentiably) to fit. 0 = full size. Dominates the cost.",
                    },
                ),
                "normalization": (
                    list(NORMALIZATIONS),
                    {
                        "default": "rms",
                        "tooltip": "rms: divide each item's gradient by its RMS, so scale is a step "
                        "size whatever the metric's units. none: raw gradient.",
                    },
                ),
                "clip": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "tooltip": "Clip each element of the (normalized) gradient to +-clip; 0 = off. "
                        "3 keeps a few pixels from taking the whole step.",
                    },
                ),
                "sigma_weighting": (
                    list(SIGMA_WEIGHTINGS),
                    {
                        "default": "constant",
                        "tooltip": "constant: the same step at every sigma. snr: times "
                        "1/(1+sigma^2), weaker while the x0 estimate is still blurry.",
                    },
                ),
            },
            "optional": {
                "iqa_model_2": ("IQA_MODEL", {"tooltip": "Optional second metric, added to the objective."}),
                "weight_2": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Weight of the second metric (the first has weight 1).",
                    },
                ),
                "iqa_model_3": ("IQA_MODEL", {"tooltip": "Optional third metric, added to the objective."}),
                "weight_3": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip": "Weight of the third metric."},
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "auto",
                        "tooltip": "auto: decoder in the VAE's own dtype (the host's choice for the device: "
                        "float32 on CPU, bf16/fp16 on most GPUs), metric in float32. float32: "
                        "exact, slowest. bfloat16: decoder and metric in bf16, ~3x faster on CPUs "
                        "with AMX; the gradient direction moves by a few percent.",
                    },
                ),
            },
        }

    def apply(
        self,
        model,
        iqa_model,
        vae,
        scale: float,
        start_percent: float,
        end_percent: float,
        every_n_steps: int,
        direction: str,
        target_z: float,
        max_decode_size: int,
        normalization: str = "rms",
        clip: float = 0.0,
        sigma_weighting: str = "constant",
        iqa_model_2: Optional[Any] = None,
        weight_2: float = 1.0,
        iqa_model_3: Optional[Any] = None,
        weight_3: float = 1.0,
        precision: str = "auto",
    ):
        check_schedule(scale, start_percent, end_percent)
        for name, x in (("target_z", target_z), ("clip", clip), ("weight_2", weight_2), ("weight_3", weight_3)):
            if (
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
            ):  # optional ones may arrive unvalidated
                raise IQAAdapterError(f"{name} is {x!r}; give a finite number.")
        if clip < 0 or weight_2 < 0 or weight_3 < 0:
            raise IQAAdapterError(
                "clip and the weights must be >= 0 (use direction 'target z-score' with a low target to degrade)."
            )
        if int(every_n_steps) < 1 or int(max_decode_size) < 0:
            raise IQAAdapterError(
                f"every_n_steps must be >= 1 and max_decode_size >= 0, got {every_n_steps} and {max_decode_size}."
            )
        for name, value, allowed in (
            ("direction", direction, DIRECTIONS),
            ("normalization", normalization, NORMALIZATIONS),
            ("sigma_weighting", sigma_weighting, SIGMA_WEIGHTINGS),
            ("precision", precision, PRECISIONS),
        ):
            if value not in allowed:
                raise IQAAdapterError(f"{name} must be one of {allowed}, got {value!r}.")
        latent_format = model.get_model_object("latent_format")
        if _is_genziqa(iqa_model):  # reads the latent: no decoder, the VAE input is not used
            decoder = latent_source(latent_format.latent_channels)
            terms = [genziqa_term(iqa_model.scorer, iqa_model.name, 1.0, direction)]
            for extra, weight in ((iqa_model_2, weight_2), (iqa_model_3, weight_3)):
                if extra is not None and weight > 0:
                    raise IQAAdapterError(
                        f"{iqa_model.name} (GenzIQA) guides on the latent without a decode, so it cannot be combined "
                        "with other metrics. Disconnect iqa_model_2 and iqa_model_3 (or set their weights to 0)."
                    )
        else:
            if getattr(vae, "first_stage_model", None) is None:
                raise IQAAdapterError(
                    "The VAE has no decoder weights (first_stage_model is missing); load a VAE or TAESD."
                )
            decoder = vae_decoder(vae, latent_format, precision)
            if decoder.latent_channels != latent_format.latent_channels:
                raise IQAAdapterError(
                    f"The VAE decodes {decoder.latent_channels}-channel latents but the model makes {latent_format.latent_channels}-channel "
                    f"latents ({type(latent_format).__name__}). Connect the VAE (or TAESD variant) of this model's family."
                )
            terms = [score_term(iqa_model, 1.0, direction, precision)]
            for extra, weight in ((iqa_model_2, weight_2), (iqa_model_3, weight_3)):
                if extra is not None and weight > 0:
                    terms.append(score_term(extra, weight, direction, precision))
        s_start, s_end = sigma_window(model, start_percent, end_percent)
        cfg = GuidanceConfig(
            scale=float(scale),
            sigma_start=float("inf") if s_start is None else s_start,
            sigma_end=0.0 if s_end is None else s_end,
            every_n_steps=int(every_n_steps),
            direction=direction,
            target_z=float(target_z),
            max_decode_size=int(max_decode_size),
            normalization=normalization,
            clip=float(clip),
            sigma_weighting=sigma_weighting,
            final_sigma=final_sigma(model),
        )
        patched = model.clone()
        if scale > 0:
            hook = GradientGuidance(cfg, decoder, terms)
            patched.set_model_sampler_post_cfg_function(hook)
            host.release_after_sampling(patched, hook, "iqa_gradient_guidance")
        log.info(
            "IQA gradient guidance: %s via %s, scale %g, sigma window [%g, %g]",
            "+".join(t.name for t in terms),
            decoder.name,
            scale,
            cfg.sigma_end,
            cfg.sigma_start,
        )
        return (patched,)


NODE_CLASS_MAPPINGS = {"IQAGradientGuidance": IQAGradientGuidance}
NODE_DISPLAY_NAME_MAPPINGS = {"IQAGradientGuidance": "IQA Gradient Guidance"}
