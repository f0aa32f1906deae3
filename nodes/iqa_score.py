"""IQA Score: per-image scores of an IMAGE batch, with percentiles and z-scores (CC3M's, or an adapter's own
training table), a table and a plot."""

from __future__ import annotations

from ..adapter.errors import IQAAdapterError
from ..adapter.model import IQAAdapter
from ..adapter.norm_table import MetricStats
from ..guidance.genziqa.iqa_model import GenzIQAModel
from ..guidance.iqa_models import IQAModel, finite_or_nan
from ..guidance.score_report import plot_scores, score_table
from ..guidance.score_set import MetricInfo, add_metric
from . import host


class IQAScore:
    DESCRIPTION = (
        "Scores every image of a batch with an IQA metric. Outputs the raw scores, their quality percentiles and "
        "z-scores in the CC3M distribution the IQA-Adapter was trained on, or in a connected adapter's own training "
        "table (NaN for metrics without statistics), a text "
        "table, and a plot of score against batch index, so that a quality sweep reads at a glance. RGBA drops "
        "alpha and greyscale is repeated to RGB; values are clamped to [0, 1]."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING", "IMAGE", "IQA_SCORES")
    RETURN_NAMES = ("scores", "percentiles", "z_scores", "table", "plot", "iqa_scores")
    OUTPUT_IS_LIST = (True, True, True, False, False, False)
    OUTPUT_TOOLTIPS = (
        "Raw metric score of each image (list, one per image, in batch order).",
        "Quality percentile (0-100, 99 = better than 99 %) of each score in the CC3M distribution, or in the connected "
        "adapter's table; NaN if the metric has no statistics.",
        "z-score of each score against that table's mean and std; NaN if the metric has no statistics.",
        "The scores, percentiles and z-scores as a tab-separated table.",
        "Plot of score against batch index (with that table's p1/p50/p99 lines where known).",
        "{metric: raw scores} of this node and every IQA Score chained into previous_scores; feeds Quality "
        "Condition's reference_scores (quality matching from a reference image) and IQA Best of N.",
    )
    FUNCTION = "score"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to score (a batch is scored image by image, in order)."}),
                "iqa_model": ("IQA_MODEL", {"tooltip": "From Load IQA Model or Load GenzIQA."}),
            },
            "optional": {
                "previous_scores": (
                    "IQA_SCORES",
                    {
                        "tooltip": "iqa_scores of another IQA Score node, to collect several metrics of the same images "
                        "(one IQA Score per metric of a Quality Condition adapter).",
                    },
                ),
                "iqa_adapter": (
                    "IQA_ADAPTER",
                    {
                        "tooltip": "Optional: give percentiles and z-scores in this adapter's own training table (a custom "
                        "adapter's file carries one), so they compare with Quality Condition's targets. Without "
                        "it, or for a metric the table lacks: the CC3M table.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {
                        "default": 4,
                        "min": 1,
                        "max": 256,
                        "tooltip": "Images per metric call (the progress bar moves after each call). Larger batches are usually faster "
                        "but need more memory; 1 moves the bar after every image.",
                    },
                ),
            },
        }

    def score(
        self,
        image,
        iqa_model: IQAModel,
        batch_size: int = 4,
        previous_scores: dict | None = None,
        iqa_adapter: IQAAdapter | None = None,
    ):
        if not isinstance(iqa_model, (IQAModel, GenzIQAModel)):
            raise IQAAdapterError(f"iqa_model is a {type(iqa_model).__name__}; connect Load IQA Model or Load GenzIQA.")
        if isinstance(batch_size, float) and batch_size.is_integer():
            batch_size = int(batch_size)
        if (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):  # optional: may arrive unvalidated
            raise IQAAdapterError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
        if previous_scores is not None and not isinstance(previous_scores, dict):  # optional: may arrive unvalidated
            raise IQAAdapterError(
                f"previous_scores must be the iqa_scores of another IQA Score node, got a {type(previous_scores).__name__}. "
                "Connect an IQA Score's iqa_scores output, or nothing."
            )
        n = int(image.shape[0]) if getattr(image, "ndim", 0) == 4 else 1
        bar = host.progress_bar(max(n, 1))
        raw = iqa_model.score(image, channels_last=True, batch_size=batch_size, progress=bar.update)
        scores = [float(s) for s in raw]
        stats = _stats(iqa_model, iqa_adapter)
        pct = None if stats is None else [stats.percentile_from_raw(s) for s in scores]
        z = None if stats is None else [stats.z_from_raw(s) for s in scores]
        table = score_table(iqa_model.name, scores, pct, z, iqa_model.lower_better)
        plot = plot_scores(iqa_model.name, scores, iqa_model.score_range, iqa_model.lower_better, stats)
        return {
            "ui": {"text": [table]},
            "result": (
                scores,
                finite_or_nan(pct, len(scores)),
                finite_or_nan(z, len(scores)),
                table,
                plot,
                add_metric(previous_scores, iqa_model.name, scores, MetricInfo(bool(iqa_model.lower_better), stats)),
            ),
        }


def _stats(iqa_model: IQAModel, iqa_adapter: IQAAdapter | None) -> MetricStats | None:
    """The adapter's own statistics of this metric when it has them, else the metric's CC3M ones."""
    if iqa_adapter is None:
        return iqa_model.stats
    if not isinstance(iqa_adapter, IQAAdapter):  # optional: may arrive unvalidated
        raise IQAAdapterError(f"iqa_adapter is a {type(iqa_adapter).__name__}; connect Load IQA-Adapter, or nothing.")
    table = iqa_adapter.norm_table
    return table.get(iqa_model.name) if iqa_model.name in table else iqa_model.stats


NODE_CLASS_MAPPINGS = {"IQAScore": IQAScore}
NODE_DISPLAY_NAME_MAPPINGS = {"IQAScore": "IQA Score"}
