"""IQA Best of N: the ranking itself, and the node through the real host's validator and executor."""

from __future__ import annotations

import math

import conftest
import pytest
import torch
from host_run import execute, sampling_graph

pack = conftest.pack
bon = pack.guidance.best_of_n
score_set = pack.guidance.score_set
IQAAdapterError = pack.adapter.IQAAdapterError
IQABestOfN = pack.nodes.best_of_n.IQABestOfN


def test_rank_is_best_first_stable_on_ties_and_puts_nan_last():
    scores = [0.5, 0.9, 0.5, math.nan, 0.9, 0.1]
    assert bon.rank(scores, lower_better=False) == [1, 4, 0, 2, 5, 3]
    assert bon.rank(scores, lower_better=True) == [5, 0, 2, 1, 4, 3]


def test_k_larger_than_the_batch_keeps_all_ranked_and_says_so():
    sel = bon.select([3.0, 1.0, 2.0], True, "best k", 5, 0.0, None, "error", "piqe")
    assert sel.indices == (1, 2, 0) and sel.scores == (1.0, 2.0, 3.0)
    assert "k = 5 is more than the batch of 3" in sel.note


def _stats(lower_better: bool):
    table = pack.adapter.norm_table.NormTable.from_dict(
        {
            "metrics": {
                "m": {
                    "mean": 50.0,
                    "std": 10.0,
                    "min": 0.0,
                    "max": 100.0,
                    "percentiles": {"50": 50.0},
                    "lower_better": lower_better,
                }
            }
        },
        "test",
    )
    return table.get("m")


@pytest.mark.parametrize("lower_better", [False, True])
def test_percentile_threshold_keeps_the_good_side_for_either_direction(lower_better):
    scores = [10.0, 90.0, 60.0, 40.0]
    sel = bon.select(scores, lower_better, "above percentile", 1, 55.0, _stats(lower_better), "error", "m")
    # quality percentile = raw percentile (higher-better) or 100 - raw percentile (lower-better); table is linear
    assert sel.indices == ((1, 2) if not lower_better else (0, 3))
    assert all(p >= 55.0 for p in sel.percentiles)


def test_threshold_that_keeps_nothing_errors_or_is_empty_or_keeps_the_best_as_asked():
    scores, stats = [10.0, 20.0], _stats(False)
    with pytest.raises(IQAAdapterError, match=r"none of the 2 images reaches percentile 99.*if_none_kept"):
        bon.select(scores, False, "above percentile", 1, 99.0, stats, "error", "m")
    assert bon.select(scores, False, "above percentile", 1, 99.0, stats, "empty", "m").indices == ()
    assert bon.select(scores, False, "above percentile", 1, 99.0, stats, "best one", "m").indices == (1,)


def test_a_percentile_without_statistics_is_an_error_that_points_to_best_k():
    with pytest.raises(IQAAdapterError, match=r"No statistics for 'x'.*best k"):
        bon.select([1.0], False, "above percentile", 1, 50.0, None, "error", "x")


def test_scores_of_another_batch_and_k_zero_are_errors_naming_the_input():
    images = torch.zeros(3, 8, 8, 3)
    with pytest.raises(
        IQAAdapterError, match=r"iqa_scores has 2 'piqe' scores but the image batch has 3.*Score this same"
    ):
        IQABestOfN().pick(images, {"piqe": [1.0, 2.0]}, "best k", 1, 75.0, "error")
    with pytest.raises(IQAAdapterError, match=r"k is 0; give a whole number of at least 1"):
        IQABestOfN().pick(images, {"piqe": [1.0, 2.0, 3.0]}, "best k", 0, 75.0, "error")


def test_a_plain_dict_of_an_unknown_metric_needs_a_direction():
    images = torch.zeros(2, 8, 8, 3)
    with pytest.raises(IQAAdapterError, match=r"unknown. Set direction"):
        IQABestOfN().pick(images, {"mine": [1.0, 2.0]}, "best k", 1, 75.0, "error")
    out = IQABestOfN().pick(images, {"mine": [1.0, 2.0]}, "best k", 1, 75.0, "error", direction="lower is better")
    assert out["result"][2] == [0]


def test_latent_items_follow_the_images():
    latent = {"samples": torch.arange(4.0).view(4, 1, 1, 1), "batch_index": [7, 8, 9, 10]}
    out = bon.take_latent(latent, [2, 0], 4)
    assert out["samples"].flatten().tolist() == [2.0, 0.0] and out["batch_index"] == [9, 7]
    with pytest.raises(IQAAdapterError, match=r"latent has 4 items but the image batch has 3"):
        bon.take_latent(latent, [0], 3)


def _best_of_n_graph(metric: str, k: int, batch: int = 5) -> dict:
    g = sampling_graph("sd15", None, batch=batch, seed=11)
    g["iqa"] = {"class_type": "IQALoadModel", "inputs": {"metric": metric, "allow_download": False, "device": "cpu"}}
    g["score"] = {"class_type": "IQAScore", "inputs": {"image": ["image", 0], "iqa_model": ["iqa", 0]}}
    g["best"] = {
        "class_type": "IQABestOfN",
        "inputs": {
            "images": ["image", 0],
            "iqa_scores": ["score", 5],
            "mode": "best k",
            "k": k,
            "percentile": 75.0,
            "if_none_kept": "error",
            "latent": ["sampler", 0],
        },
    }
    g["preview"]["inputs"]["images"] = ["best", 0]
    return g


@pytest.mark.parametrize("metric,lower_better", [("piqe", True), ("entropy", False)])
def test_kept_order_equals_a_direct_sort_of_the_scores_through_the_executor(metric, lower_better):
    run = execute(_best_of_n_graph(metric, k=3))
    assert run.ok, run.error_message
    out = run.executor.outputs
    scores = [float(s) for s in out["score"][0]]
    assert len(set(scores)) == len(scores) == 5  # distinct, so the direct sort is unambiguous
    want = sorted(range(5), key=lambda i: scores[i], reverse=not lower_better)[:3]
    assert list(out["best"][2]) == want
    assert [float(s) for s in out["best"][3]] == [scores[i] for i in want]
    images, kept = out["image"][0][0], out["best"][0][0]
    assert torch.equal(kept, images[want])
    latent = out["sampler"][0][0]["samples"]
    assert torch.equal(out["best"][1][0]["samples"], latent[want])
    assert f"{metric} ({'lower' if lower_better else 'higher'} is better): kept 3 of 5" in out["best"][4][0]


def test_scores_from_another_batch_fail_in_the_executor_naming_the_input():
    g = _best_of_n_graph("piqe", k=1, batch=3)
    g["other"] = {"class_type": "IQATestPatternImage", "inputs": {"width": 64, "height": 64, "seed": 0}}
    g["score"]["inputs"]["image"] = ["other", 0]
    run = execute(g)
    assert not run.ok
    assert "iqa_scores has 1 'piqe' scores but the image batch has 3" in run.error_message


def test_iqa_score_records_the_direction_and_stays_a_plain_mapping():
    s = score_set.add_metric({"niqe": [1.0]}, "piqe", [2.0], score_set.MetricInfo(True, None))
    s = score_set.add_metric(s, "niqe", [3.0], score_set.MetricInfo(True, None))
    assert list(s) == ["piqe", "niqe"] and s["niqe"] == [3.0] and dict(s) == {"piqe": [2.0], "niqe": [3.0]}
    assert score_set.metric_info(s, "piqe").lower_better is True
    assert score_set.metric_info({"topiq_nr": [0.5]}, "topiq_nr").stats is not None  # CC3M table by name
