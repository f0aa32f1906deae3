"""The no-reference IQA metrics the pack supports, as data: the facts pyiqa does not give.

pyiqa's own config (DEFAULT_CONFIGS) gives each metric's network and options, its lower_better flag and its
score range (as a string): those are read from it, when first asked for (importing pyiqa takes seconds, and
the nodes that do not score load without it). The pack adds: whether gradients flow (guidance), the smallest
image side that gives a meaningful score, whether the metric's own checkpoint covers its backbone (then the
backbone's ImageNet/CLIP weights are never needed), and where its backbone can be tapped.

Left out on purpose: qalign (a 7B multimodal LLM: tens of GB, and pyiqa's implementation needs
transformers>=5, which the ComfyUI host's pinned transformers 4.x excludes); full-reference metrics
(IQA Score scores images on their own); face-only metrics (topiq_nr-face needs a face detector).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any, Mapping

from ..adapter.errors import IQAAdapterError

TOPIQ_TAPS = (
    "semantic_model.act1",
    "semantic_model.layer1",
    "semantic_model.layer2",
    "semantic_model.layer3",
    "semantic_model.layer4",
)


@dataclass(frozen=True)
class MetricSpec:
    """One supported metric: what the pack needs beyond pyiqa's config, which lower_better and score_range read."""

    name: str  # pyiqa metric name
    differentiable: bool  # input gradients flow through the score (needed for guidance)
    min_side: int = 32  # smallest image side (px) scored; below it the metric fails or means nothing
    backbone_in_checkpoint: bool = False  # the metric's checkpoint is loaded strictly into the whole network
    taps: tuple[str, ...] = ()  # default activation taps (module paths inside metric.net)
    note: str = ""

    @property
    def lower_better(self) -> bool:
        """pyiqa's flag: lower raw scores mean better quality."""
        return bool(pyiqa_config(self.name).get("lower_better", False))

    @property
    def score_range(self) -> tuple[float, float]:
        """pyiqa's typical range of raw scores, as numbers (its '~' bounds taken as given)."""
        return parse_score_range(pyiqa_config(self.name)["score_range"])


@functools.lru_cache(maxsize=None)
def pyiqa_config(name: str) -> Mapping[str, Any]:
    """pyiqa's default config of a metric (DEFAULT_CONFIGS; no model is built)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS[name]


def parse_score_range(text: str) -> tuple[float, float]:
    """pyiqa's score range string ('~0, ~100', '1, 5') as (low, high)."""
    parts = [p.strip().lstrip("~").strip() for p in str(text).split(",")]
    if len(parts) != 2:
        raise ValueError(f"pyiqa score range {text!r} is not 'low, high'")
    lo, hi = float(parts[0]), float(parts[1])
    if not lo < hi:
        raise ValueError(f"pyiqa score range {text!r} is empty")
    return lo, hi


def _m(name: str, *, diff: bool = True, **kw: Any) -> MetricSpec:
    return MetricSpec(name, diff, **kw)


_CKPT = {"backbone_in_checkpoint": True}
METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in [
        # The 21 metrics of the CC3M normalization table (paper), then classic and extra ones.
        _m("topiq_nr", taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (KonIQ), ResNet-50 at native size"),
        _m("topiq_nr-flive", taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (FLIVE), resized to 384"),
        _m("topiq_nr-spaq", taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (SPAQ)"),
        _m("topiq_iaa", **_CKPT, note="TOPIQ aesthetics (AVA), Swin-B at 384"),
        _m("maniqa", **_CKPT, note="MANIQA (KonIQ), ViT-B/8 on 224 crops; heavy with gradients"),
        _m("maniqa-pipal", **_CKPT, note="MANIQA (PIPAL)"),
        _m("clipiqa+", note="CLIP-IQA+ learned prompts, CLIP RN50"),
        _m("musiq", note="MUSIQ (KonIQ), multi-scale patches"),
        _m("musiq-paq2piq", note="MUSIQ (PaQ-2-PiQ)"),
        _m("musiq-ava", note="MUSIQ aesthetics (AVA)"),
        _m("arniqa", note="ARNIQA (KonIQ regressor): encoder and TorchScript regressor files"),
        _m("arniqa-kadid", note="ARNIQA (KADID regressor)"),
        _m("arniqa-flive", note="ARNIQA (FLIVE regressor)"),
        _m("dbcnn", **_CKPT, note="DBCNN (KonIQ), VGG-16 + SCNN"),
        _m("laion_aes", note="LAION aesthetics MLP on CLIP ViT-L/14"),
        _m("liqe", min_side=224, **_CKPT, note="LIQE (KonIQ), CLIP ViT-B/32 on 224 patches"),
        _m("liqe_mix", min_side=224, **_CKPT, note="LIQE multitask"),
        _m("nima-vgg16-ava", **_CKPT, note="NIMA aesthetics, VGG-16"),
        _m("hyperiqa", **_CKPT, note="HyperIQA (KonIQ), ResNet-50 on 224 crops"),
        _m("tres-flive", **_CKPT, note="TReS (FLIVE); very heavy on CPU"),
        _m("cnniqa", note="CNNIQA (KonIQ), small CNN"),
        _m("niqe", min_side=96, note="NIQE, natural scene statistics on 96 px blocks"),
        _m("brisque", min_side=32, note="BRISQUE, SVM on natural scene statistics"),
        _m("piqe", diff=False, min_side=16, note="PIQE, block statistics; thresholds, no gradients"),
        _m("entropy", diff=False, min_side=1, note="grey-level histogram entropy; no gradients"),
        _m("clipiqa", note="CLIP-IQA with fixed prompts, CLIP RN50"),
        _m("nima", **_CKPT, note="NIMA aesthetics, Inception-ResNet-v2"),
    ]
}

DEFAULT_METRIC = "topiq_nr"


def metric_names() -> list[str]:
    return list(METRICS)


def get_spec(name: str) -> MetricSpec:
    """The spec of a supported metric; an unknown name gets close matches and the full list."""
    spec = METRICS.get(name)
    if spec is not None:
        return spec
    key = str(name).strip().lower()
    for candidate in METRICS:
        if candidate.lower() == key:
            return METRICS[candidate]
    close = difflib.get_close_matches(key, list(METRICS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    extra = " qalign is not supported (a 7B multimodal LLM that needs transformers>=5)." if key == "qalign" else ""
    raise IQAAdapterError(f"Unknown IQA metric '{name}'.{hint}{extra} Supported: {', '.join(METRICS)}.")
