"""The no-reference IQA metrics the pack supports, as data, with the facts pyiqa does not give as numbers.

pyiqa's own config gives each metric's network and options, a lower_better flag and a score range as a
string. The pack also needs: the range as numbers (plots), whether gradients flow (guidance), the smallest
image side that gives a meaningful score, whether the metric's own checkpoint covers its backbone (then
the backbone's ImageNet/CLIP weights are never needed), where its backbone can be tapped, and whether it
can be built with random weights for tests. Tests check every entry against pyiqa's config.

Left out on purpose: qalign (a 7B multimodal LLM: tens of GB, and pyiqa's implementation needs
transformers>=5, which the ComfyUI host's pinned transformers 4.x excludes); full-reference metrics
(IQA Score scores images on their own); face-only metrics (topiq_nr-face needs a face detector).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..adapter.errors import IQAAdapterError

TOPIQ_TAPS = ("semantic_model.act1", "semantic_model.layer1", "semantic_model.layer2", "semantic_model.layer3",
              "semantic_model.layer4")


@dataclass(frozen=True)
class MetricSpec:
    name: str  # pyiqa metric name
    score_range: tuple[float, float]  # typical range of raw scores (pyiqa's '~' bounds taken as given)
    lower_better: bool
    differentiable: bool  # input gradients flow through the score (needed for guidance)
    min_side: int = 32  # smallest image side (px) scored; below it the metric fails or means nothing
    backbone_in_checkpoint: bool = False  # the metric's checkpoint is loaded strictly into the whole network
    taps: tuple[str, ...] = ()  # default activation taps (module paths inside metric.net)
    note: str = ""


def _m(name: str, lo: float, hi: float, *, lower: bool = False, diff: bool = True, **kw: Any) -> MetricSpec:
    return MetricSpec(name, (float(lo), float(hi)), lower, diff, **kw)


_CKPT = {"backbone_in_checkpoint": True}
METRICS: dict[str, MetricSpec] = {s.name: s for s in [
    # The 21 metrics of the CC3M normalization table (paper), then classic and extra ones.
    _m("topiq_nr", 0, 1, taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (KonIQ), ResNet-50 at native size"),
    _m("topiq_nr-flive", 0, 1, taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (FLIVE), resized to 384"),
    _m("topiq_nr-spaq", 0, 1, taps=TOPIQ_TAPS, **_CKPT, note="TOPIQ (SPAQ)"),
    _m("topiq_iaa", 1, 10, **_CKPT, note="TOPIQ aesthetics (AVA), Swin-B at 384"),
    _m("maniqa", 0, 1, **_CKPT, note="MANIQA (KonIQ), ViT-B/8 on 224 crops; heavy with gradients"),
    _m("maniqa-pipal", 0, 1, **_CKPT, note="MANIQA (PIPAL)"),
    _m("clipiqa+", 0, 1, note="CLIP-IQA+ learned prompts, CLIP RN50"),
    _m("musiq", 0, 100, note="MUSIQ (KonIQ), multi-scale patches"),
    _m("musiq-paq2piq", 0, 100, note="MUSIQ (PaQ-2-PiQ)"),
    _m("musiq-ava", 1, 10, note="MUSIQ aesthetics (AVA)"),
    _m("arniqa", 0, 1, note="ARNIQA (KonIQ regressor): encoder and TorchScript regressor files"),
    _m("arniqa-kadid", 0, 1, note="ARNIQA (KADID regressor)"),
    _m("arniqa-flive", 0, 1, note="ARNIQA (FLIVE regressor)"),
    _m("dbcnn", 0, 1, **_CKPT, note="DBCNN (KonIQ), VGG-16 + SCNN"),
    _m("laion_aes", 1, 10, note="LAION aesthetics MLP on CLIP ViT-L/14"),
    _m("liqe", 1, 5, min_side=224, **_CKPT, note="LIQE (KonIQ), CLIP ViT-B/32 on 224 patches"),
    _m("liqe_mix", 1, 5, min_side=224, **_CKPT, note="LIQE multitask"),
    _m("nima-vgg16-ava", 0, 10, **_CKPT, note="NIMA aesthetics, VGG-16"),
    _m("hyperiqa", 0, 1, **_CKPT, note="HyperIQA (KonIQ), ResNet-50 on 224 crops"),
    _m("tres-flive", 0, 100, **_CKPT, note="TReS (FLIVE); very heavy on CPU"),
    _m("cnniqa", 0, 1, note="CNNIQA (KonIQ), small CNN"),
    _m("niqe", 0, 100, lower=True, min_side=96, note="NIQE, natural scene statistics on 96 px blocks"),
    _m("brisque", 0, 150, lower=True, min_side=32, note="BRISQUE, SVM on natural scene statistics"),
    _m("piqe", 0, 100, lower=True, diff=False, min_side=16, note="PIQE, block statistics; thresholds, no gradients"),
    _m("entropy", 0, 8, diff=False, min_side=1, note="grey-level histogram entropy; no gradients"),
    _m("clipiqa", 0, 1, note="CLIP-IQA with fixed prompts, CLIP RN50"),
    _m("nima", 0, 10, **_CKPT, note="NIMA aesthetics, Inception-ResNet-v2"),
]}

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
