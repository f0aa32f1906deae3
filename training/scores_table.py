"""The scores file that `score` writes, read for training: key -> the metrics' values, in the adapter's order.

Values are z-scores under the given normalisation table (the one `score` wrote beside the Parquet file,
which export then embeds in the adapter), or raw scores with --no-normalize. Loaded whole: a few floats
per image (CC3M's 3M rows are some 50 MB), where the images themselves are streamed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from adapter.norm_table import NormTable
from training.errors import TrainingError

KEY_COLUMN = "key"


@dataclass
class ScoresTable:
    metrics: tuple[str, ...]
    values: dict[str, torch.Tensor]  # key -> [d] float32
    captions: Optional[dict[str, str]]

    def vector(self, key: str, where: str) -> torch.Tensor:
        try:
            return self.values[key]
        except KeyError:
            raise TrainingError(f"{where} (key '{key}') has no row in the scores file. Score the whole dataset first "
                                "(python -m training score), or remove the image.") from None


def read_scores(path: Path, metrics: Sequence[str], table: Optional[NormTable],
                caption_column: Optional[str] = None) -> ScoresTable:
    """Read and check the scores file; z-scores with `table`, raw values when it is None."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"--scores {path}: no such file. Write it with `python -m training score`.")
    try:
        schema = pq.read_schema(str(path))
    except Exception as exc:
        raise TrainingError(f"--scores {path.name} is not a readable Parquet file ({type(exc).__name__}: {exc}). "
                            "Write it again with `python -m training score`.") from None
    wanted = [KEY_COLUMN, *metrics] + ([caption_column] if caption_column else [])
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise TrainingError(f"--scores {path.name} has no column {', '.join(repr(m) for m in missing)} (it has: "
                            f"{', '.join(schema.names)}). Score the dataset with those metrics, or train on the metrics it has.")
    cols = pq.read_table(str(path), columns=wanted).to_pydict()
    stats = [table.get(m) for m in metrics] if table is not None else None
    values: dict[str, torch.Tensor] = {}
    for row, key in enumerate(cols[KEY_COLUMN]):
        raw = [cols[m][row] for m in metrics]
        for m, v in zip(metrics, raw):
            if v is None or not math.isfinite(v):
                raise TrainingError(f"--scores {path.name}, row {row} (key '{key}'): metric '{m}' is {v}. Score that "
                                    "image again, or drop its row.")
        if stats is not None:
            raw = [s.z_from_raw(v) for s, v in zip(stats, raw)]
        values[str(key)] = torch.tensor(raw, dtype=torch.float32)
    if not values:
        raise TrainingError(f"--scores {path.name} has no rows. Score the dataset first.")
    captions = None
    if caption_column:
        captions = {str(k): c for k, c in zip(cols[KEY_COLUMN], cols[caption_column]) if isinstance(c, str)}
    return ScoresTable(tuple(metrics), values, captions)
