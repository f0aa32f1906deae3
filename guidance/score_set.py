"""IQA_SCORES, the value IQA Score hands on: {metric: [raw score per image]}, plus how to read each metric.

Readers that only need the numbers (Quality Condition's reference_scores) see a plain dict. Best of N also
needs each metric's direction and the statistics its percentiles refer to (the CC3M table, a connected
adapter's table, or a GenzIQA file's own), which only IQA Score knows, so they ride along as attributes. A
plain dict (from another pack, or JSON) still works: then they are looked up by the metric's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..adapter.norm_table import MetricStats, default_norm_table


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric's scores: its direction and the statistics of its percentiles (None: none)."""

    lower_better: Optional[bool]
    stats: Optional[MetricStats]


class IQAScores(dict):
    """{metric: [raw score per image]} in the order the metrics were scored (the newest last), with MetricInfo."""

    def __init__(self, scores: Mapping[str, Sequence[float]] = (), info: Optional[Mapping[str, MetricInfo]] = None):
        super().__init__(scores)
        self.info: dict[str, MetricInfo] = dict(info or {})


def add_metric(
    previous: Optional[Mapping[str, Sequence[float]]], name: str, scores: list[float], info: MetricInfo
) -> IQAScores:
    """previous plus this metric's scores, placed last (a metric scored again replaces its old entry)."""
    previous = previous or {}
    kept = {k: v for k, v in previous.items() if k != name}
    old_info = {k: v for k, v in getattr(previous, "info", {}).items() if k != name}
    return IQAScores({**kept, name: scores}, {**old_info, name: info})


def metric_info(scores: Mapping[str, Sequence[float]], name: str) -> MetricInfo:
    """What IQA Score recorded for the metric; for a plain dict, the CC3M table's and pyiqa's facts by name."""
    recorded = getattr(scores, "info", {}).get(name)
    if recorded is not None:
        return recorded
    table = default_norm_table()
    stats = table.get(name) if name in table else None
    return MetricInfo(_known_direction(name, stats), stats)


def _known_direction(name: str, stats: Optional[MetricStats]) -> Optional[bool]:
    if stats is not None:
        return stats.lower_better
    from .metric_specs import METRICS

    if name not in METRICS:
        return None
    try:
        return METRICS[name].lower_better
    except (ImportError, KeyError):  # pyiqa not installed: the direction stays unknown
        return None
