"""The percentile table of a trained GenzIQA file: its calibrated scores on (a spread sample of) its own
training images, in the pack's norm-table format, stored in the file so that IQA Score gives percentiles
that refer to the data the file was trained on (as an IQA-Adapter's own table does for Quality Condition).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from training.common.errors import TrainingError
from training.common.norm_tables import TABLE_FORMAT, describe


def spread_sample(items: Sequence[Any], count: int) -> list[Any]:
    """Up to `count` items evenly spread over `items` (all of them when there are no more), deterministic."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def score_table(
    score_image: Callable[[torch.Tensor], float],
    load_pixels: Callable[[Path], torch.Tensor],
    labels: Sequence[Any],
    count: int,
    metric: str,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """A norm table {format, source, count, metrics: {metric: stats}} of the scores of up to `count` of the
    label file's images. Higher scores are better (the calibration maps them onto the MOS scale)."""
    picks = spread_sample(labels, count)
    scores = []
    for lab in picks:
        scores.append(float(score_image(load_pixels(lab.path))))
        if progress is not None:
            progress(1)
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all() or values.std() == 0:
        raise TrainingError(
            f"The trained file gives {values.size} image(s) the scores {values[:4].round(4).tolist()}...: no "
            "percentile table can be made (constant or non-finite). Train longer or on more varied images, or "
            "pass --table-images 0 to export without one."
        )
    return {
        "format": TABLE_FORMAT,
        "source": source,
        "description": "Calibrated GenzIQA scores of a spread sample of the training images (higher is better).",
        "count": int(values.size),
        "metrics": {metric: dict(describe(values), lower_better=False)},
    }
