"""The toy quality net as one of the pack's IQA models, `toy_quality`: it scores, and it embeds references.

Reference Quality Transfer needs an IQA network whose activations tell blur from noise from JPEG, and the
toy world has no downloaded weights. The toy's own quality net (toy/quality_net.py) was trained on exactly
those three degradation levels, so its pooled features already separate them (its head reads them to
predict the three levels). The embedding is those features: the mean and the standard deviation of the
net's last stage ("body", 96 channels) over positions, at the toy's 64 px. Measured separability:
scripts/toy_separability.py.

The pack's IQAModel wraps a pyiqa InferenceModel; ToyQualityMetric gives the net that face (.net, a
dummy_param, a forward that scores). The pack's modules are passed in (iqa_models, metric_specs), so that
the host's loaded copy (toy/nodes) and training's (training.common.core) each get their own classes.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from . import quality_net

METRIC = quality_net.METRIC  # "toy_quality"
NET_FILE = Path(__file__).resolve().parent.parent / "weights" / "toy" / "toy_quality_net.safetensors"
SPEC_FILE = Path(__file__).resolve().parent.parent / "weights" / "toy" / "toy_quality_embedding_spec.json"
SIZE = 64  # the net's training size; other sizes are resized to it


class ToyQualityMetric(torch.nn.Module):
    """The net with a pyiqa metric's interface: forward(images in [0, 1]) -> toy_quality per image."""

    lower_better = False

    def __init__(self, net: quality_net.ToyQualityNet):
        super().__init__()
        self.net = net
        self.dummy_param = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # where the net lives

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (SIZE, SIZE):
            images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        return quality_net.quality(self.net(images))


def metric_spec(metric_specs: ModuleType) -> Any:
    """The pack's MetricSpec for toy_quality; direction and range are the toy's, not pyiqa's (it has none)."""

    class ToyMetricSpec(metric_specs.MetricSpec):
        @property
        def lower_better(self) -> bool:
            return False

        @property
        def score_range(self) -> tuple[float, float]:
            return (0.0, 100.0)

    return ToyMetricSpec(
        name=METRIC,
        differentiable=True,
        min_side=16,
        taps=("body",),
        note="the toy world's own quality net (weights/toy), not a pyiqa metric",
    )


def load_iqa_model(iqa_models: ModuleType, metric_specs: ModuleType, path: Path = NET_FILE, device: Any = "cpu") -> Any:
    """The pack's IQAModel of the toy quality net at `path` (a clear error when the file is missing)."""
    net = quality_net.load(path)
    return iqa_models.wrap_metric(
        metric_spec(metric_specs), ToyQualityMetric(net), files=[(str(path), "")], home=device
    )
