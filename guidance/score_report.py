"""How IQA Score shows its results: a text table and a small plot of score against batch index.

Plain numpy and PIL, so that a quality sweep (e.g. targets 1/25/50/75/99 across a batch) reads at a glance.
The plot's vertical range covers every score (and at least a tenth of the metric's typical range); where
the metric has CC3M statistics, dashed lines mark the 1st, 50th and 99th percentiles of its training
distribution.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..adapter.norm_table import MetricStats

PLOT_SIZE = (512, 320)
_MARGIN = (58, 16, 16, 34)  # left, top, right, bottom
_BG, _AXIS, _LINE, _POINT, _GUIDE = (255, 255, 255), (40, 40, 40), (31, 119, 180), (214, 39, 40), (150, 150, 150)


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def score_table(
    name: str,
    scores: Sequence[float],
    percentiles: Sequence[float] | None,
    z_scores: Sequence[float] | None,
    lower_better: bool,
) -> str:
    """One line per image: index, raw score, quality percentile and z-score (n/a without statistics)."""
    head = f"{name} ({'lower' if lower_better else 'higher'} is better)"
    lines = [head, "index\tscore\tpercentile\tz-score"]
    for i, s in enumerate(scores):
        p = percentiles[i] if percentiles is not None else None
        z = z_scores[i] if z_scores is not None else None
        lines.append(f"{i}\t{_fmt(s, 6)}\t{_fmt(p, 4)}\t{_fmt(z, 4)}")
    if len(scores) > 1:
        arr = np.asarray(scores, dtype=np.float64)
        lines.append(
            f"mean {_fmt(float(arr.mean()), 6)}  min {_fmt(float(arr.min()), 6)}  max {_fmt(float(arr.max()), 6)}"
        )
    return "\n".join(lines)


def plot_scores(
    name: str,
    scores: Sequence[float],
    score_range: tuple[float, float],
    lower_better: bool,
    stats: MetricStats | None = None,
    size: tuple[int, int] = PLOT_SIZE,
) -> torch.Tensor:
    """Score against batch index as a host IMAGE [1, H, W, 3] in [0, 1]."""
    w, h = size
    left, top, right, bottom = _MARGIN
    img = Image.new("RGB", (w, h), _BG)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    values = [float(s) for s in scores if math.isfinite(float(s))]
    guides = [] if stats is None else [(p, stats.raw_from_percentile(p)) for p in (1.0, 50.0, 99.0)]
    # Zoom to the scores (and the percentile lines), but never below a tenth of the metric's typical range,
    # so that near-identical scores do not look like a wide spread.
    span_min = 0.1 * (score_range[1] - score_range[0]) or 1.0
    pool = values + [g for _, g in guides] or list(score_range)
    lo, hi = min(pool), max(pool)
    if hi - lo < span_min:
        mid = (hi + lo) / 2
        lo, hi = mid - span_min / 2, mid + span_min / 2
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    n = len(scores)

    def px(i: int) -> float:
        return (x0 + x1) / 2 if n <= 1 else x0 + (x1 - x0) * i / (n - 1)

    def py(v: float) -> float:
        return y1 - (y1 - y0) * (v - lo) / (hi - lo)

    draw.rectangle([x0, y0, x1, y1], outline=_AXIS)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):  # y ticks
        v = lo + frac * (hi - lo)
        draw.line([x0 - 4, py(v), x0, py(v)], fill=_AXIS)
        draw.text((4, py(v) - 6), _fmt(v, 3), fill=_AXIS, font=font)
    for p, g in guides:
        for xs in range(x0, x1, 8):
            draw.line([xs, py(g), min(xs + 4, x1), py(g)], fill=_GUIDE)
        draw.text((x1 - 34, py(g) - 12), f"p{int(p)}", fill=_GUIDE, font=font)
    ticks = range(n) if n <= 16 else np.linspace(0, n - 1, 9).round().astype(int)
    for i in ticks:
        draw.line([px(int(i)), y1, px(int(i)), y1 + 4], fill=_AXIS)
        draw.text((px(int(i)) - 3, y1 + 6), str(int(i)), fill=_AXIS, font=font)
    pts = [(px(i), py(float(s))) for i, s in enumerate(scores) if math.isfinite(float(s))]
    if len(pts) > 1:
        draw.line(pts, fill=_LINE, width=2)
    for x, y in pts:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=_POINT)
    title = f"{name}  ({'lower' if lower_better else 'higher'} is better)  vs batch index"
    draw.text((x0, h - 14), title, fill=_AXIS, font=font)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).unsqueeze(0)
