"""Normalization statistics of IQA metrics, and conversions between percentile, raw score and z-score.

The adapter is trained on z-scores: each metric's raw score standardized with the mean and std of the
training set (CC3M). Users think in percentiles ("the 99th percentile is high quality"), so targets can be
given as a percentile, a raw score or a z-score. Percentiles between the tabulated ones are interpolated
linearly in raw-score space; percentile 0 and 100 are the table's min and max.

A percentile here is always a quality percentile: 99 is better than 99 % of the training set. The table
stores percentiles of the raw scores; for a metric where lower is better (PIQE, NIQE: the table's
"lower_better", written by `python -m training score` from pyiqa's flag) quality percentile p is raw
percentile 100 - p. Every CC3M metric is higher-better, so for them the two are the same.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from .errors import IQAAdapterError

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "weights" / "cc3m_norm_stats.json"


@dataclass(frozen=True)
class MetricStats:
    """Raw-score statistics of one metric on the training set."""

    name: str
    mean: float
    std: float
    percentiles: tuple[tuple[float, float], ...]  # (raw-score percentile, raw), sorted, including 0 and 100
    lower_better: bool = False  # quality percentile p is raw percentile 100 - p (module docstring)

    def z_from_raw(self, raw: float) -> float:
        return (raw - self.mean) / self.std

    def raw_from_z(self, z: float) -> float:
        return self.mean + z * self.std

    def raw_from_percentile(self, percentile: float) -> float:
        if not 0.0 <= percentile <= 100.0:
            raise IQAAdapterError(
                f"Percentile {percentile} for metric '{self.name}' is outside 0-100. "
                "Give a percentile between 0 and 100 (99 is the paper's 'high quality')."
            )
        if self.lower_better:
            percentile = 100.0 - percentile
        ps = [p for p, _ in self.percentiles]
        i = bisect.bisect_left(ps, percentile)
        if ps[i] == percentile:
            return self.percentiles[i][1]
        (p0, r0), (p1, r1) = self.percentiles[i - 1], self.percentiles[i]
        return r0 + (r1 - r0) * (percentile - p0) / (p1 - p0)

    def percentile_from_raw(self, raw: float) -> float:
        """Inverse of raw_from_percentile, clamped to 0-100 outside the table's range."""
        raw_percentile = self._raw_percentile(raw)
        return 100.0 - raw_percentile if self.lower_better else raw_percentile

    def _raw_percentile(self, raw: float) -> float:
        pts = self.percentiles
        if raw <= pts[0][1]:
            return 0.0
        if raw >= pts[-1][1]:
            return 100.0
        for (p0, r0), (p1, r1) in zip(pts, pts[1:]):
            if r0 <= raw <= r1:
                return p0 if r1 == r0 else p0 + (p1 - p0) * (raw - r0) / (r1 - r0)
        return 100.0  # unreachable for a monotone table

    def z_from_percentile(self, percentile: float) -> float:
        return self.z_from_raw(self.raw_from_percentile(percentile))


class NormTable:
    """A registry of MetricStats by pyiqa metric name."""

    def __init__(self, stats: Mapping[str, MetricStats], source: str = ""):
        self._stats = dict(stats)
        self.source = source

    def __contains__(self, name: str) -> bool:
        return name in self._stats

    def names(self) -> list[str]:
        return sorted(self._stats)

    def get(self, name: str) -> MetricStats:
        try:
            return self._stats[name]
        except KeyError:
            raise IQAAdapterError(
                f"No normalization statistics for metric '{name}'. Known metrics: {', '.join(self.names())}. "
                "Give the target as a value the adapter was trained on (target mode matching the adapter's "
                "normalization), or add the metric's statistics to the table."
            ) from None

    @classmethod
    def from_json(cls, path: Path) -> "NormTable":
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def from_dict(cls, doc: Mapping, where: str) -> "NormTable":
        """A table in the pack's format ("iqa-adapter-norm-table/1"): per metric mean, std, min, max and
        percentiles {"1": raw, ...}, optionally lower_better (default false). Other per-metric fields (such as the z-score statistics that
        `python -m training score` adds) are ignored here."""
        stats = {}
        try:
            for name, m in doc["metrics"].items():
                pts = [(0.0, float(m["min"]))]
                pts += sorted((float(p), float(v)) for p, v in m["percentiles"].items())
                pts.append((100.0, float(m["max"])))
                if not (math.isfinite(m["std"]) and m["std"] > 0):
                    raise IQAAdapterError(f"Normalization table {where}: metric '{name}' has std {m['std']}.")
                stats[name] = MetricStats(
                    name, float(m["mean"]), float(m["std"]), tuple(pts), lower_better=bool(m.get("lower_better", False))
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, IQAAdapterError):
                raise
            raise IQAAdapterError(
                f"Normalization table {where} is not in the pack's format ({type(exc).__name__}: {exc}): each metric "
                "needs mean, std, min, max and percentiles. Write it with `python -m training score`."
            ) from None
        return cls(stats, doc.get("source", ""))


@lru_cache(maxsize=1)
def default_norm_table() -> NormTable:
    """The CC3M table of the paper, shipped in weights/."""
    return NormTable.from_json(DEFAULT_TABLE)
