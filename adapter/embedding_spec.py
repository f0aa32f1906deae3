"""The embedding spec of a reference-based IQA-Adapter: how a reference image becomes its input vector.

The paper does not publish its extractor, so the spec is explicit metadata ("embedding" in the adapter's
metadata, or a named spec from weights/embedding_specs.json):
  metric       - the pyiqa metric whose network is tapped (e.g. "topiq_nr");
  taps         - dotted module paths inside the metric's network, concatenated in this order;
  channels     - the channel count of each tap, so the embedding size is known without running a network;
  pooling      - "mean" (global average per channel) or "mean_std" (per tap: its channel means, then its
                 channel standard deviations), taps concatenated in order;
  resolution   - the reference is resized to resolution x resolution (bilinear, antialiased);
  normalize    - "none": the network gets [0, 1] RGB (pyiqa networks normalize internally), or "imagenet"
                 to apply ImageNet mean/std first, for networks that do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .errors import IQAAdapterError

SPECS_FILE = Path(__file__).resolve().parent.parent / "weights" / "embedding_specs.json"
POOLINGS = {"mean": 1, "mean_std": 2}
NORMALIZATIONS = ("imagenet", "none")


@dataclass(frozen=True)
class EmbeddingSpec:
    metric: str
    taps: tuple[str, ...]
    channels: tuple[int, ...]
    pooling: str = "mean_std"
    resolution: int = 384
    normalize: str = "none"
    name: str = "custom"

    @property
    def dim(self) -> int:
        return POOLINGS[self.pooling] * sum(self.channels)


def spec_from_dict(obj: Mapping[str, Any], where: str) -> EmbeddingSpec:
    """A spec from metadata: either {"spec": "<known name>"} (plus overrides) or all fields."""
    obj = dict(obj)
    if "spec" in obj:
        base = known_specs().get(obj.pop("spec"))
        if base is None:
            raise IQAAdapterError(
                f"Embedding spec in {where} names an unknown spec; known: {', '.join(sorted(known_specs()))}."
            )
        obj = {**base, **obj}
    try:
        taps = tuple(obj["taps"])
        channels = tuple(int(c) for c in obj["channels"])
        spec = EmbeddingSpec(
            metric=str(obj["metric"]),
            taps=taps,
            channels=channels,
            pooling=obj.get("pooling", "mean_std"),
            resolution=int(obj.get("resolution", 384)),
            normalize=obj.get("normalize", "none"),
            name=str(obj.get("name", "custom")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IQAAdapterError(
            f"Embedding spec in {where} is incomplete or malformed ({exc}); it needs metric, taps and channels."
        ) from None
    if not taps or len(taps) != len(channels) or min(channels) <= 0:
        raise IQAAdapterError(
            f"Embedding spec in {where}: give one positive channel count per tap ({len(taps)} taps, {len(channels)} counts)."
        )
    if spec.pooling not in POOLINGS:
        raise IQAAdapterError(
            f"Embedding spec in {where}: pooling must be one of {sorted(POOLINGS)}, got {spec.pooling!r}."
        )
    if spec.normalize not in NORMALIZATIONS:
        raise IQAAdapterError(
            f"Embedding spec in {where}: normalize must be one of {NORMALIZATIONS}, got {spec.normalize!r}."
        )
    if not 32 <= spec.resolution <= 2048:
        raise IQAAdapterError(f"Embedding spec in {where}: resolution {spec.resolution} is outside 32-2048.")
    return spec


@lru_cache(maxsize=1)
def known_specs() -> dict[str, dict]:
    return json.loads(SPECS_FILE.read_text())["specs"]


def check_spec_fits(spec: EmbeddingSpec, input_dim: int, name: str) -> None:
    if spec.dim != input_dim:
        raise IQAAdapterError(
            f"{name}: its embedding spec ({spec.name}: {spec.metric}, taps {', '.join(spec.taps)}, pooling {spec.pooling}) "
            f"gives {spec.dim} values, but the checkpoint's projection takes {input_dim}. The spec does not belong to "
            "this checkpoint: fix the 'embedding' metadata (sidecar JSON or the node's override)."
        )
