"""The proof that Quality Condition's mask puts quality where it is told: the Regional quality example on the
shipped toy weights through the real host's HTTP prompt queue (scripts/toy_regional.py).

Per seed, one batch of two items from one noise: p99 on the left half and p1 on the right, then the reverse.
Each half is scored as its own crop, at p99 and at p1, so the comparison is of the same half (same content,
same noise) at the two targets: the trained metric (toy_quality) and the impulse share (a plain measure of
the toy's noise, not trained on; toy/degradation_measures.py). On at least 7 of 8 seeds the p99 crops must be
better than the p1 crops, summed over both halves. Measured 2026-12-07 (scripts/toy_regional.py): 8/8 seeds
for both (toy_quality gains 2.8-42.3, impulse share 0.017-0.033). NIQE on the 64x32 crops is better on 6/8
seeds, 3 of them above its margin, so it is reported there, not asserted.

Margins, from what the computation can promise on another CPU: float rounding moves a toy image by at most
a level of 255 at a few pixels; +-1 level of noise on every pixel (3 draws) moved a crop's score by at most
0.69 (toy_quality) and 9.8e-4 (impulse share). A seed's gain sums four crop scores, so MARGINS holds four
times that; a seed counts only when its gain exceeds it (with these margins: toy_quality 7/8, seed 3's 2.76
being under 2.78; impulse share 8/8).
"""

from __future__ import annotations

import numpy as np
import pytest
import server_host
import toy_regional
import toy_sweep
import workflow_fixtures

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEEDS = range(8)
MIN_SEEDS = 7
MARGINS: dict[str, float] = {"toy_quality": 2.78, "impulse share": 3.9e-3}
MEASURED = ("toy_quality", "impulse share")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if not workflow_fixtures.toy_ready():
        pytest.fail(f"toy weights missing in {workflow_fixtures.TOY_WEIGHTS}: restore them from git")
    with server_host.running_host(tmp_path_factory.mktemp("toy_regional"), toy=True) as h:
        yield h


@pytest.fixture(scope="module")
def scores(host) -> dict[str, np.ndarray]:
    if not toy_sweep.niqe_available():
        pytest.fail(f"NIQE parameters missing in {toy_sweep.NIQE_DIRS}: run scripts/prepare_test_data.sh")
    runs = toy_regional.run(host.server, SEEDS)
    s = toy_regional.half_scores(runs, [toy_sweep.TRAINED_METRIC, toy_sweep.HELD_OUT_METRIC])
    print(toy_regional.table(s))
    return s


def _sweep(host, mask_value=None, scale: float = 1.0) -> np.ndarray:
    """The toy sweep (seed 0, p1..p99 from one noise) with a Solid Mask of `mask_value` on Quality Condition
    (None: no mask), as 8-bit pixels."""
    prompt = toy_sweep.sweep_prompt(host.info, seed=0, scale=scale)
    if mask_value is not None:
        prompt["solid"] = {"class_type": "SolidMask", "inputs": {"value": mask_value, "width": 64, "height": 64}}
        next(n for n in prompt.values() if n["class_type"] == "IQAQualityCondition")["inputs"]["mask"] = ["solid", 0]
    (run,) = toy_sweep.run_saved(host.server, [prompt], len(toy_sweep.TARGETS))
    return (toy_sweep.load_images(run).numpy() * 255).round()


def test_a_mask_of_ones_equals_no_mask_and_zeros_equal_scale_zero(host):
    """Bit for bit in one process, through the queue: the node drops a mask of ones, and a mask of zeros leaves
    the model unpatched."""
    assert np.array_equal(_sweep(host, 1.0), _sweep(host))
    assert np.array_equal(_sweep(host, 0.0), _sweep(host, scale=0.0))
    assert not np.array_equal(_sweep(host), _sweep(host, scale=0.0))  # the condition does act here


@pytest.mark.parametrize("metric", MEASURED)
def test_each_half_is_better_at_p99_than_at_p1(scores, metric):
    gains = toy_regional.gains(scores)[metric]
    assert (gains > MARGINS[metric]).sum() >= MIN_SEEDS, f"{metric} gain per seed: {gains.round(3)}"
