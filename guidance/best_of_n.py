"""Best of N: rank a batch by one IQA metric and keep the best k, or those above a quality percentile.

Plain Python and torch. Ranking is best first, in the metric's own direction (lower-is-better metrics such as
PIQE and NIQE rank their lowest first); equal scores keep batch order (a stable sort), and a NaN score ranks
last and never passes a threshold, so a broken image is never picked over a scored one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from ..adapter.errors import IQAAdapterError
from ..adapter.norm_table import MetricStats

SELECT_MODES = ("best k", "above percentile")
WHEN_NONE_KEPT = ("error", "empty", "best one")


@dataclass(frozen=True)
class Selection:
    """The kept batch indices, best first, their scores and quality percentiles (None without statistics)."""

    indices: tuple[int, ...]
    scores: tuple[float, ...]
    percentiles: Optional[tuple[float, ...]]
    note: str = ""


def rank(scores: Sequence[float], lower_better: bool) -> list[int]:
    """Batch indices, best first; ties in batch order; NaN last."""

    def key(i: int) -> tuple:
        s = float(scores[i])
        if math.isnan(s):
            return (1, 0.0, i)
        return (0, s if lower_better else -s, i)

    return sorted(range(len(scores)), key=key)


def pick_metric(scores: Mapping[str, Sequence[float]], metric: str) -> str:
    """The named metric, or with no name the one scored last (the IQA Score node connected here)."""
    if not isinstance(scores, Mapping) or not scores:
        raise IQAAdapterError(
            f"iqa_scores holds no scores (got a {type(scores).__name__}). Connect the iqa_scores output of an "
            "IQA Score node that scored this image batch."
        )
    metric = (metric or "").strip()
    if not metric:
        return list(scores)[-1]
    if metric not in scores:
        raise IQAAdapterError(
            f"metric '{metric}' is not in iqa_scores (it holds {', '.join(scores)}). Name one of those, or leave "
            "metric empty for the last one scored."
        )
    return metric


def check_batch(values: Sequence[float], batch: int, metric: str) -> list[float]:
    """The scores as floats, one per image of the batch; another length means they belong to other images."""
    if len(values) != batch:
        raise IQAAdapterError(
            f"iqa_scores has {len(values)} '{metric}' scores but the image batch has {batch} images: the scores "
            "come from another batch. Score this same image batch (connect it to the IQA Score node's image input)."
        )
    return [float(v) for v in values]


def select(
    scores: Sequence[float],
    lower_better: bool,
    mode: str,
    k: int,
    percentile: float,
    stats: Optional[MetricStats],
    when_none_kept: str,
    metric: str = "the metric",
) -> Selection:
    """Keep the best k, or every image whose quality percentile is at least `percentile`; best first."""
    order = rank(scores, lower_better)
    pct = None if stats is None else [stats.percentile_from_raw(s) if math.isfinite(s) else math.nan for s in scores]
    note = ""
    if mode == "best k":
        if k > len(order):
            note = f"k = {k} is more than the batch of {len(order)}: all {len(order)} kept, best first."
        kept = order[:k]
    elif mode == "above percentile":
        if pct is None:
            raise IQAAdapterError(
                f"No statistics for '{metric}', so a percentile means nothing for it. Use mode 'best k', or "
                "connect an iqa_adapter whose training table has this metric."
            )
        kept = [i for i in order if pct[i] >= percentile]  # NaN compares false: never kept
        if not kept:
            kept, note = _none_kept(order, when_none_kept, metric, percentile, scores, pct)
    else:
        raise IQAAdapterError(f"mode must be one of {SELECT_MODES}, got {mode!r}.")
    return Selection(
        tuple(kept),
        tuple(float(scores[i]) for i in kept),
        None if pct is None else tuple(pct[i] for i in kept),
        note,
    )


def _none_kept(
    order: list[int], when: str, metric: str, percentile: float, scores: Sequence[float], pct: list[float]
) -> tuple[list[int], str]:
    best = order[0]
    where = f"none of the {len(order)} images reaches percentile {percentile:g} of '{metric}'"
    if when == "empty":
        return [], f"{where}: the result is empty."
    if when == "best one" and math.isfinite(pct[best]):
        return [best], f"{where}: kept the best one (image {best})."
    if when in WHEN_NONE_KEPT:
        raise IQAAdapterError(
            f"{where} (the best, image {best}, scores {scores[best]:.6g}, percentile {pct[best]:.4g}). Lower "
            "percentile, or set if_none_kept to 'empty' or 'best one'."
        )
    raise IQAAdapterError(f"if_none_kept must be one of {WHEN_NONE_KEPT}, got {when!r}.")


def take_images(images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """The kept images in order; an empty selection is a batch of 0 images of the same size."""
    return images[list(indices)] if indices else images[:0]


def take_latent(latent: Mapping[str, Any], indices: Sequence[int], batch: int) -> dict:
    """The kept items of a host LATENT ({"samples": [B, C, H, W], optional noise_mask, batch_index})."""
    samples = latent.get("samples") if isinstance(latent, Mapping) else None
    if not isinstance(samples, torch.Tensor):
        raise IQAAdapterError(
            f"latent must be a LATENT (a dict with 'samples'), got a {type(latent).__name__}. Connect the "
            "sampler's LATENT output, or nothing."
        )
    if samples.shape[0] != batch:
        raise IQAAdapterError(
            f"latent has {samples.shape[0]} items but the image batch has {batch}. Connect the latent these "
            "images were decoded from."
        )
    out = dict(latent)
    idx = list(indices)
    out["samples"] = samples[idx] if idx else samples[:0]
    mask = latent.get("noise_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim >= 3 and mask.shape[0] == batch:
        out["noise_mask"] = mask[idx] if idx else mask[:0]
    if isinstance(latent.get("batch_index"), (list, tuple)) and len(latent["batch_index"]) == batch:
        out["batch_index"] = [latent["batch_index"][i] for i in idx]
    return out


def summary(metric: str, lower_better: bool, batch: int, sel: Selection) -> str:
    """A text table of the kept images: rank, batch index, score, percentile."""
    head = f"{metric} ({'lower' if lower_better else 'higher'} is better): kept {len(sel.indices)} of {batch}"
    lines = [head, "rank\tindex\tscore\tpercentile"]
    for r, (i, s) in enumerate(zip(sel.indices, sel.scores)):
        p = "n/a" if sel.percentiles is None or not math.isfinite(sel.percentiles[r]) else f"{sel.percentiles[r]:.4g}"
        lines.append(f"{r + 1}\t{i}\t{s:.6g}\t{p}")
    if sel.note:
        lines.append(sel.note)
    return "\n".join(lines)
