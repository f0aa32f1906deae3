"""The pack's normalisation-table format as both trainers write it ("iqa-adapter-norm-table/1", read by
adapter/norm_table.py): `score` for a dataset's metrics, genziqa-train for a trained file's own scores."""

from __future__ import annotations

import numpy as np

TABLE_FORMAT = "iqa-adapter-norm-table/1"
PERCENTILES = tuple(range(1, 100))


def describe(values: np.ndarray) -> dict:
    """mean, std (ddof 0), min, max and percentiles 1..99 of one column, as the norm table stores them."""
    pct = np.percentile(values, PERCENTILES)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentiles": {str(p): float(v) for p, v in zip(PERCENTILES, pct)},
    }
