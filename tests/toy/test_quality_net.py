"""The toy's own IQA model (toy/quality_net.py): the shipped net reads each degradation on pictures it never
saw, tells the three apart, and the train and score commands work; a missing or foreign file is a clear error.

Floors, from what the computation can promise on another CPU: the pictures and the net are deterministic, so
another CPU's float rounding can only swap near-equal predictions; the SRCC floors sit 0.07-0.1 below the
measured values (weights/toy/MODEL_CARD.md), far more than a few swapped ranks of 200 can move them."""

from __future__ import annotations

import json

import conftest  # noqa: F401  (starts the host; toy/ is imported from the repo root)
import numpy as np
import pytest
import torch
from safetensors import safe_open
from workflow_fixtures import TOY_WEIGHTS

from toy import patches, quality_net
from toy.errors import ToyError
from toy.sources import SOURCES, load_rgb

NET = TOY_WEIGHTS / "toy_quality_net.safetensors"


@pytest.fixture(scope="module")
def fresh():
    """200 pictures of a seed no training used (the net trained on seeds 100 and 101)."""
    photos = [load_rgb(s) for s in SOURCES]
    draws = [patches.make_patch(photos, 102, i) for i in range(200)]
    x = torch.from_numpy(np.stack([p for _, p, _ in draws])).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor([[d.blur, d.noise, d.jpeg] for _, _, d in draws])


def test_the_shipped_net_reads_each_degradation_on_fresh_pictures(fresh):
    """Measured 0.883 (blur), 0.918 (noise), 0.936 (JPEG), 0.977 (toy_quality)."""
    x, truth = fresh
    got = quality_net.report(quality_net.predict(quality_net.load(NET), x), truth)
    assert got["toy_quality"] > 0.9 and all(got[k] > 0.8 for k in quality_net.KINDS), got


def test_the_shipped_net_tells_blur_from_noise_from_jpeg(fresh):
    """On pictures with one degradation at level >= 0.3, that one is the largest predicted (64 of 64)."""
    x, truth = fresh
    levels = quality_net.predict(quality_net.load(NET), x)
    single = [(i, int(t.argmax())) for i, t in enumerate(truth) if (t > 0).sum() == 1 and t.max() >= 0.3]
    assert len(single) >= 30
    right = sum(int(levels[i].argmax()) == k for i, k in single)
    assert right >= len(single) - 2, f"{right} of {len(single)}"


def test_train_and_score_write_a_net_and_a_scores_file(tmp_path):
    from training.iqa_adapter.score import read_scores

    out = tmp_path / "net.safetensors"
    quality_net.main(
        ["train", "--work", str(tmp_path / "pics"), "--out", str(out), "--count", "128", "--val-count", "32"]
        + ["--steps", "60", "--batch", "16", "--width", "8"]
    )
    assert quality_net.load(out).width == 8  # loads: the header and the weights agree
    with safe_open(str(out), "pt") as f:
        header = json.loads(f.metadata()[quality_net.HEADER_KEY])
    first, last = header["loss_first_last"]  # means of the first and last 12 of the 60 steps
    assert header["loss_window"] == 12 and last < 0.8 * first
    scores = tmp_path / "scores.parquet"
    quality_net.main(["score", "--net", str(out), "--data", str(tmp_path / "pics" / "val"), "--out", str(scores)])
    z = read_scores(scores, [quality_net.METRIC])
    assert len(z) == 32 and all(np.isfinite(v).all() for v in z.values())


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(ToyError, match="not found"):
        quality_net.load(tmp_path / "none.safetensors")
    from safetensors.torch import save_file  # a safetensors file of something else

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ToyError, match="not a toy quality net"):
        quality_net.load(tmp_path / "other.safetensors")
