"""IQA Best of N: keep the best images of a batch by their IQA scores (and the matching latents)."""

from __future__ import annotations

import math

from ..adapter.errors import IQAAdapterError
from ..adapter.model import IQAAdapter
from ..guidance.best_of_n import (
    SELECT_MODES,
    WHEN_NONE_KEPT,
    check_batch,
    pick_metric,
    select,
    summary,
    take_images,
    take_latent,
)
from ..guidance.score_set import metric_info

DIRECTIONS = ("auto", "higher is better", "lower is better")
MAX_K = 4096


class IQABestOfN:
    DESCRIPTION = (
        "Keeps the best images of a batch by their IQA scores (IQA Score's iqa_scores, any metric, GenzIQA too): "
        "the best k, or every image above a quality percentile of the metric's table (CC3M, a GenzIQA file's own) "
        "or of a connected adapter's. Lower-is-better metrics (PIQE, NIQE) rank their lowest first; equal scores "
        "keep batch order. Connect the sampler's latent to get the matching latents too."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("IMAGE", "LATENT", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "latent", "indices", "scores", "summary")
    OUTPUT_IS_LIST = (False, False, True, True, False)
    OUTPUT_TOOLTIPS = (
        "The kept images, best first (a batch of 0 images when nothing is kept and if_none_kept is 'empty').",
        "The latent input's kept items in the same order (only with a latent connected).",
        "Batch index (0-based) of each kept image, best first (list).",
        "Raw score of each kept image, best first (list).",
        "The kept images as a table: rank, batch index, score, quality percentile.",
    )
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The image batch that was scored."}),
                "iqa_scores": (
                    "IQA_SCORES",
                    {"tooltip": "iqa_scores of the IQA Score node that scored these images (one score per image)."},
                ),
                "mode": (
                    list(SELECT_MODES),
                    {
                        "default": "best k",
                        "tooltip": "best k: the k best images. above percentile: every image whose quality percentile "
                        "(99 = better than 99 % of the table) is at least `percentile`.",
                    },
                ),
                "k": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": MAX_K,
                        "tooltip": "How many to keep in 'best k' mode. More than the batch keeps the whole batch, ranked.",
                    },
                ),
                "percentile": (
                    "FLOAT",
                    {
                        "default": 75.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 1.0,
                        "tooltip": "Quality percentile threshold for 'above percentile' mode, in the table IQA Score used "
                        "(or in iqa_adapter's, when connected here).",
                    },
                ),
                "if_none_kept": (
                    list(WHEN_NONE_KEPT),
                    {
                        "default": "error",
                        "tooltip": "When no image reaches the percentile. error: stop with a message. empty: a batch of 0 "
                        "images. best one: keep the best image anyway.",
                    },
                ),
            },
            "optional": {
                "latent": (
                    "LATENT",
                    {"tooltip": "The latent batch these images were decoded from, to pick the same items."},
                ),
                "metric": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Which metric of iqa_scores ranks (with several chained IQA Scores). Empty: the one "
                        "scored last.",
                    },
                ),
                "direction": (
                    list(DIRECTIONS),
                    {
                        "default": "auto",
                        "tooltip": "auto: the metric's own (IQA Score records it; PIQE, NIQE, BRISQUE are lower-is-better). "
                        "Set it for scores of a metric the pack does not know.",
                    },
                ),
                "iqa_adapter": (
                    "IQA_ADAPTER",
                    {
                        "tooltip": "Optional: read percentiles in this adapter's own training table (when it has the metric)."
                    },
                ),
            },
        }

    def pick(
        self,
        images,
        iqa_scores,
        mode: str,
        k: int,
        percentile: float,
        if_none_kept: str,
        latent=None,
        metric: str = "",
        direction: str = "auto",
        iqa_adapter: IQAAdapter | None = None,
    ):
        _check_numbers(k, percentile)
        if getattr(images, "ndim", 0) != 4:
            raise IQAAdapterError(f"images must be an IMAGE batch [B, H, W, C], got {type(images).__name__}.")
        name = pick_metric(iqa_scores, metric)
        batch = int(images.shape[0])
        values = check_batch(iqa_scores[name], batch, name)
        lower_better, stats = _how_to_read(iqa_scores, name, direction, iqa_adapter)
        sel = select(values, lower_better, mode, int(k), float(percentile), stats, if_none_kept, name)
        text = summary(name, lower_better, batch, sel)
        kept_latent = None if latent is None else take_latent(latent, sel.indices, batch)
        return {
            "ui": {"text": [text]},
            "result": (take_images(images, sel.indices), kept_latent, list(sel.indices), list(sel.scores), text),
        }


def _check_numbers(k, percentile) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise IQAAdapterError(f"k is {k!r}; give a whole number of at least 1 (the number of images to keep).")
    if not isinstance(percentile, (int, float)) or not (math.isfinite(percentile) and 0 <= percentile <= 100):
        raise IQAAdapterError(f"percentile is {percentile!r}; give a number from 0 to 100.")


def _how_to_read(scores, name: str, direction: str, iqa_adapter) -> tuple[bool, object]:
    """(lower_better, stats): the direction as set or recorded; the adapter's table first, else IQA Score's."""
    if direction not in DIRECTIONS:
        raise IQAAdapterError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    info = metric_info(scores, name)
    stats = info.stats
    if iqa_adapter is not None:
        if not isinstance(iqa_adapter, IQAAdapter):  # optional: may arrive unvalidated
            raise IQAAdapterError(
                f"iqa_adapter is a {type(iqa_adapter).__name__}; connect Load IQA-Adapter, or nothing."
            )
        if name in iqa_adapter.norm_table:
            stats = iqa_adapter.norm_table.get(name)
    if direction != "auto":
        return direction == "lower is better", stats
    lower = info.lower_better if info.lower_better is not None else (None if stats is None else stats.lower_better)
    if lower is None:
        raise IQAAdapterError(
            f"Whether lower or higher '{name}' scores are better is unknown. Set direction to 'higher is better' "
            "or 'lower is better'."
        )
    return lower, stats


NODE_CLASS_MAPPINGS = {"IQABestOfN": IQABestOfN}
NODE_DISPLAY_NAME_MAPPINGS = {"IQABestOfN": "IQA Best of N"}
