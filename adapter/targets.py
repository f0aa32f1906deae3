"""Quality targets as users write them, turned into the values the adapter was trained on.

Text form (one node input that fits any adapter, whatever its metrics):
  * one line per batch item; ';' also separates items. "1; 25; 50; 75; 99" is the paper's sweep;
  * a line is either one number, used for every metric of the adapter, or "metric=value" pairs separated
    by commas, naming every metric of the adapter: "topiq_nr=99, laion_aes=90";
  * the target mode says what the numbers are: a percentile of the training set (0-100), a z-score, or
    a raw metric score.
Values are converted to z-scores for normalized adapters (the default) or raw scores otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .errors import IQAAdapterError
from .norm_table import NormTable

TARGET_MODES = ("percentile", "z-score", "raw")
_SPLIT = re.compile(r"[;\n]")
# The most batch items targets may give: the largest latent batch the host's Empty Latent Image makes. Checked
# before anything is parsed or projected: every item costs K/V for every layer (about 1.3 MB on SDXL with
# 2 tokens), and a number of items other than 1 or the latent batch fails at sampling anyway.
MAX_TARGET_ITEMS = 4096


@dataclass(frozen=True)
class TargetBatch:
    """Per-item targets in the adapter's metric order, as model inputs ([B, d])."""

    values: torch.Tensor
    z_scores: torch.Tensor  # the same targets as z-scores, for display and tests
    metrics: tuple[str, ...]


_PERCENTILE_SPELLING = re.compile(r"^\s*(?:[pP]\s*)?(\d+(?:\.\d*)?|\.\d+)\s*%?\s*$")  # "p99", "99%"


def _number(value: object, where: str) -> float:
    """A finite float from typed text or a score (float, 0-d tensor), or an error naming where it came from."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        written = _PERCENTILE_SPELLING.match(value) if isinstance(value, str) else None
        if written:
            raise IQAAdapterError(
                f"Target {where}: '{value.strip()}' is not a number. Write {written.group(1)}, with target_mode "
                "'percentile': the mode says what the numbers are."
            ) from None
        raise IQAAdapterError(f"Target {where}: '{value}' is not a number.") from None
    if not math.isfinite(x):
        raise IQAAdapterError(f"Target {where} is {value}: targets must be finite numbers.")
    return x


def check_item_count(n: int, what: str) -> None:
    """Refuse more batch items than a latent batch can have, before any of them is built."""
    if n > MAX_TARGET_ITEMS:
        raise IQAAdapterError(
            f"{n} {what}, but a batch holds at most {MAX_TARGET_ITEMS} items (the largest latent batch the host "
            "makes). Give one line per latent of the batch, or one line for all of them."
        )


def _check_commas(item: str, line: int, metrics: Sequence[str]) -> None:
    """Commas only separate metric=value pairs; a stray one gets a message that says to remove it."""
    if "," not in item:
        return
    example = ", ".join(f"{m}=99" for m in metrics)
    if any(not part.strip() for part in item.split(",")):
        raise IQAAdapterError(
            f"Target line {line} ('{item}') has an empty entry between commas: remove the trailing or doubled "
            f"comma. Commas only separate metric=value pairs, e.g. '{example}'."
        )
    if "=" not in item:
        raise IQAAdapterError(
            f"Target line {line} ('{item}') separates numbers with commas. Give one batch item per line or "
            f"separate them with ';' (e.g. '1; 25; 50'), or name each metric: '{example}'."
        )


def parse_targets(text: str, metrics: Sequence[str]) -> list[dict[str, float]]:
    """Parse the text form into one {metric: number} dict per batch item."""
    items = [s.strip() for s in _SPLIT.split(text or "") if s.strip()]
    if not items:
        raise IQAAdapterError(
            "No targets given. Write e.g. '99' (every metric at that value) or one line per batch item."
        )
    check_item_count(len(items), "target lines")
    out = []
    for i, item in enumerate(items, 1):
        _check_commas(item, i, metrics)
        if "=" not in item:
            x = _number(item, f"on line {i}")
            out.append({m: x for m in metrics})
            continue
        row: dict[str, float] = {}
        for pair in item.split(","):
            name, _, val = (p.strip() for p in pair.partition("="))
            if name in row:
                raise IQAAdapterError(
                    f"Target line {i} names metric '{name}' twice. Give each metric one value, e.g. "
                    + ", ".join(f"{m}=99" for m in metrics)
                    + "."
                )
            if name not in metrics:
                raise IQAAdapterError(
                    f"Target line {i} names metric '{name}', but this adapter was trained on {', '.join(metrics)}. "
                    "Name only the adapter's metrics."
                )
            row[name] = _number(val, f"'{name}' on line {i}")
        missing = [m for m in metrics if m not in row]
        if missing:
            raise IQAAdapterError(
                f"Target line {i} gives no value for {', '.join(missing)}. Name every metric, or give one number."
            )
        out.append(row)
    return out


def _z_bounds(table: NormTable, metric: str) -> tuple[float, float]:
    st = table.get(metric)
    lo, hi = st.z_from_raw(st.percentiles[0][1]), st.z_from_raw(st.percentiles[-1][1])
    return lo - 3.0, hi + 3.0


def to_z(value: float, mode: str, metric: str, table: NormTable) -> float:
    """Convert one target to a z-score, validating its range."""
    if mode not in TARGET_MODES:
        raise IQAAdapterError(f"Unknown target mode '{mode}'. Use one of {', '.join(TARGET_MODES)}.")
    st = table.get(metric)
    if mode == "percentile":
        z = st.z_from_percentile(value)
    elif mode == "raw":
        z = st.z_from_raw(value)
    else:
        z = value
    lo, hi = _z_bounds(table, metric)
    if not lo <= z <= hi:
        raise IQAAdapterError(
            f"Target {value} ({mode}) for '{metric}' is z = {z:.2f}, far outside the training data "
            f"(z {lo + 3:.2f} to {hi - 3:.2f}). Use a value inside that range, e.g. percentile 99 for high quality."
        )
    return z


def build_targets(
    items: Sequence[dict[str, float]], mode: str, metrics: Sequence[str], normalized: bool, table: NormTable
) -> TargetBatch:
    """Turn parsed items into model inputs: z-scores (normalized adapters) or raw scores."""
    zs = [[to_z(item[m], mode, m, table) for m in metrics] for item in items]
    z = torch.tensor(zs, dtype=torch.float32)
    if normalized:
        values = z
    else:
        values = torch.tensor(
            [[table.get(m).raw_from_z(v) for m, v in zip(metrics, row)] for row in zs], dtype=torch.float32
        )
    return TargetBatch(values, z, tuple(metrics))


def items_from_scores(scores: Mapping[str, Sequence[float]], metrics: Sequence[str]) -> list[dict[str, float]]:
    """Targets matching a reference: raw scores per metric (one per reference image) -> one item per image.

    `scores` is an IQA_SCORES value from IQA Score, {metric: [raw score per image]}; chain one IQA Score per
    metric of the adapter. A metric with one score applies it to every item.
    """
    if not isinstance(scores, Mapping) or not all(
        isinstance(v, Sequence) and not isinstance(v, str) for v in scores.values()
    ):
        raise IQAAdapterError(
            f"expected IQA scores ({{metric: [score per image]}}), got a {type(scores).__name__}. "
            "Connect the iqa_scores output of an IQA Score node."
        )
    missing = [m for m in metrics if m not in scores]
    if missing:
        raise IQAAdapterError(
            f"no scores for {', '.join(missing)} (there are scores for {', '.join(scores) or 'none'}). "
            "Score the reference with one IQA Score node per adapter metric, chained through previous_scores."
        )
    lengths = {len(scores[m]) for m in metrics} - {1}
    if len(lengths) > 1:
        raise IQAAdapterError(
            f"the scores hold different numbers of images per metric ({sorted(lengths)}); score the same images."
        )
    n = lengths.pop() if lengths else 1
    check_item_count(n, "reference images")
    items = []
    for i in range(n):
        row = {}
        for m in metrics:
            values = scores[m]
            row[m] = _number(values[i if len(values) > 1 else 0], f"score of '{m}' for reference {i + 1}")
        items.append(row)
    return items
