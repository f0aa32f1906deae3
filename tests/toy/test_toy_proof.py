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

What holds and is asserted (measured 2026-12-07, medians of 8 seeds, p1 -> p99; docs/training.md): the
trained metric rises at every step (49.6, 55.0, 65.6, 74.1, 78.7); PIQE (28.1 -> 18.2) and NIQE (11.3 ->
10.3) are better at p99 than at p1, though not at every step (p25 is the worst of both); the picture is
sharper (0.0192 -> 0.0220), has fewer impulse pixels (0.0171 -> 0.0035) and is less blocky (0.985 -> 0.963).
What does not hold yet, so is not asserted: the held-out medians are not monotone, and the medians do not
reach the training pictures' quartiles (p99 78.7 against their p75 80.2; p1 49.6 against their p25 26.7).

Margins, from what the computation can promise on another CPU: float rounding changes a toy image by at
most a level of 255 at a few pixels. MARGINS holds, per score, twice the largest change of a median of the 8
seeds (any target) when every pixel of the 40 images moves by a random -1, 0 or +1 level (3 draws), far more
noise than rounding makes; each asserted gain must exceed it. Measured spreads: toy_quality 0.14, PIQE 3.41,
NIQE 0.15, sharpness 4.7e-5, impulse share 4.9e-4, blockiness 1.7e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import server_host
import toy_sweep
import workflow_fixtures
from helpers import SAME_LEVELS

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEEDS = range(8)
HELD_OUT = ("piqe", "niqe")
MEASURES = ("sharpness", "impulse share", "blockiness")
# Twice how far one median moved under +-1 level of noise on every pixel (see the docstring).
MARGINS: dict[str, float] = {
    "toy_quality": 0.29,
    "piqe": 6.8,
    "niqe": 0.30,
    "sharpness": 9.5e-5,
    "impulse share": 9.8e-4,
    "blockiness": 3.4e-3,
}


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


def test_the_sweep_runs_at_the_nodes_defaults(host):
    prompt = toy_sweep.sweep_prompt(host.info, seed=0)
    loader = next(n for n in prompt.values() if n["class_type"] == "IQAAdapterLoader")
    assert loader["inputs"]["adapter_name"] == workflow_fixtures.TOY_ADAPTER
    condition = next(n for n in prompt.values() if n["class_type"] == "IQAQualityCondition")
    defaults = host.info["IQAQualityCondition"]["input"]["required"]
    assert condition["inputs"]["uncond"] == defaults["uncond"][1]["default"] == "zeros"


def test_the_trained_metric_rises_at_every_step_of_the_target(scores):
    metric = toy_sweep.TRAINED_METRIC
    med = np.median(scores[metric], axis=0)
    steps = [_better(metric, b, a) for a, b in zip(med, med[1:])]
    assert min(steps) > MARGINS[metric], f"{metric} medians p1..p99 {med.round(3)}, steps {np.round(steps, 3)}"
    wins = int(sum(_better(metric, s[-1], s[0]) > 0 for s in scores[metric]))
    assert wins == len(SEEDS), f"p99 beats p1 on {wins}/{len(SEEDS)} seeds"


@pytest.mark.parametrize("metric", HELD_OUT)
def test_held_out_metrics_are_better_at_p99_than_at_p1(scores, metric):
    """Not monotone (see the docstring): the assertion is the end points' medians."""
    med = np.median(scores[metric], axis=0)
    assert _better(metric, med[-1], med[0]) > MARGINS[metric], f"{metric} medians p1..p99 {med.round(3)}"


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
