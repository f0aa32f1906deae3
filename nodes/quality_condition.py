"""Quality Condition: condition a MODEL on target quality scores through an IQA-Adapter."""

from __future__ import annotations

from ..adapter import (
    MAX_TARGET_ITEMS,
    TARGET_MODES,
    IQAAdapter,
    IQAAdapterError,
    RegionMask,
    attach_quality_tokens,
    build_targets,
    items_from_scores,
    parse_targets,
    quality_tokens,
    sigma_window,
)
from . import host
from .schedule import BLOCK_WEIGHTS_INPUT, MODEL_INPUT, check_schedule, layer_weights, schedule_inputs

UNCOND_MODES = ("zeros", "negative quality")


class QualityCondition:
    DESCRIPTION = (
        "Conditions the model on target image-quality scores (IQA-Adapter, Abud et al., ICCV 2025). High "
        "targets (percentile 99) raise quality; low ones degrade it. Several lines make a batch: each latent "
        "of the batch gets its own target."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the quality condition on every cross-attention layer.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "iqa_adapter": ("IQA_ADAPTER", {"tooltip": "From Load IQA-Adapter; must match the model's family."}),
                "targets": (
                    "STRING",
                    {
                        "default": "99",
                        "multiline": True,
                        "tooltip": "One number for every metric ('99'), or 'metric=value' pairs naming each of the adapter's "
                        "metrics ('topiq_nr=99, laion_aes=75'). One line (or ';'-separated item) per batch item: "
                        f"'1; 25; 50; 75; 99' is the paper's quality sweep; at most {MAX_TARGET_ITEMS} items. Commas only "
                        "separate metric=value pairs: a trailing comma is an error.",
                    },
                ),
                "target_mode": (
                    list(TARGET_MODES),
                    {
                        "default": "percentile",
                        "tooltip": "percentile: quality percentile 0-100 of the adapter's training set (99 = better than 99 % of it, "
                        "1 = degraded, also for lower-is-better metrics); the table in the adapter file, else CC3M's. "
                        "z-score: standard deviations from that table's mean. raw: the metric's own score.",
                    },
                ),
                **schedule_inputs("quality"),
                "uncond": (
                    list(UNCOND_MODES),
                    {
                        "default": "zeros",
                        "tooltip": "CFG negative branch. zeros: the unconditional input, as trained (default). "
                        "negative quality: -strength x the target vector; sharper contrast, the authors report over-stylized results.",
                    },
                ),
                "negative_strength": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "k in -k x target, used only with uncond = negative quality (official 0.5).",
                    },
                ),
            },
            "optional": {
                "mask": (
                    "MASK",
                    {
                        "tooltip": "Regional quality: the term applies only where the mask is (soft values weigh it; "
                        "resized to each layer). One mask for the batch or one per item. Stack two Quality "
                        "Conditions with opposite masks for e.g. a sharp subject on a degraded background.",
                    },
                ),
                "block_weights": BLOCK_WEIGHTS_INPUT,
                "reference_scores": (
                    "IQA_SCORES",
                    {
                        "tooltip": "Quality matching: take the targets from a reference image's scores (IQA Score's iqa_scores "
                        "output; chain one IQA Score per adapter metric). When connected, targets and target_mode are "
                        "ignored and each scored image gives one batch item at its raw scores.",
                    },
                ),
            },
        }

    def apply(
        self,
        model,
        iqa_adapter: IQAAdapter,
        targets: str,
        target_mode: str,
        scale: float,
        start_percent: float,
        end_percent: float,
        uncond: str = "zeros",
        negative_strength: float = 0.5,
        reference_scores: dict | None = None,
        block_weights: str = "",
        mask=None,
    ):
        check_schedule(scale, start_percent, end_percent)
        region = None if mask is None else RegionMask.from_host(mask, "mask")
        if uncond not in UNCOND_MODES:
            raise IQAAdapterError(f"uncond must be one of {UNCOND_MODES}, got {uncond!r}.")
        if iqa_adapter.metadata.kind != "quality":
            raise IQAAdapterError(
                f"{iqa_adapter.name} is a {iqa_adapter.metadata.kind} adapter; use it with Reference Quality Transfer."
            )
        meta, table = iqa_adapter.metadata, iqa_adapter.norm_table
        source = "reference_scores" if reference_scores is not None else "targets"
        try:  # name the input in every target error, as the host shows only the message
            if reference_scores is not None:
                items, mode = items_from_scores(reference_scores, meta.metrics), "raw"
            else:
                items, mode = parse_targets(targets, meta.metrics), target_mode
            batch = build_targets(items, mode, meta.metrics, meta.normalized, table)
        except IQAAdapterError as exc:
            raise IQAAdapterError(f"{source}: {exc}") from None
        weights = layer_weights(model, block_weights)
        s_start, s_end = sigma_window(model, start_percent, end_percent)
        negative = negative_strength if uncond == "negative quality" else None
        tokens = quality_tokens(iqa_adapter, batch, scale, s_start, s_end, negative, region)
        return (attach_quality_tokens(model, iqa_adapter.spec, tokens, host.host_attention, iqa_adapter.name, weights),)


NODE_CLASS_MAPPINGS = {"IQAQualityCondition": QualityCondition}
NODE_DISPLAY_NAME_MAPPINGS = {"IQAQualityCondition": "Quality Condition"}
