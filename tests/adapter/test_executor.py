"""Whole graphs through the real host's prompt validator and node executor (torch.inference_mode on)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny
from host_run import execute, sampling_graph

META = {"metrics": ["topiq_nr", "laion_aes"], "use_flag": True, "pos_encode_L": 0}


@pytest.fixture(scope="module")
def adapters(adapter_dir):
    names = {}
    for layout in ("sd15", "sdxl"):
        tiny.write_adapter(adapter_dir / f"exec_{layout}.safetensors", layout, META)
        names[layout] = f"exec_{layout}.safetensors"
    return names


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_sampling_with_quality_condition_runs_and_changes_the_image(layout, adapters):
    plain = execute(sampling_graph(layout, None, batch=2))
    cond = execute(sampling_graph(layout, adapters[layout], targets="1; 99", batch=2))
    assert plain.ok and cond.ok, cond.error_message
    a, b = plain.output("image"), cond.output("image")
    assert a.shape == b.shape == (2, 64, 64, 3) and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-3
    assert (b[0] - b[1]).abs().max() > 1e-3  # p1 and p99 items differ on the same seed
    again = execute(sampling_graph(layout, adapters[layout], targets="1; 99", batch=2))
    # Bitwise: the same process, prompt, code and shapes (see host_run.sampling_graph on free memory).
    assert torch.equal(again.output("image"), b)  # deterministic, and nothing leaked between prompts
    assert torch.equal(execute(sampling_graph(layout, None, batch=2)).output("image"), a)


def test_cfg_one_runs_cond_only(adapters):
    run = execute(sampling_graph("sd15", adapters["sd15"], cfg=1.0))
    assert run.ok, run.error_message


@pytest.mark.parametrize("layout,other", [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_wrong_base_model_is_an_execution_error_naming_both(layout, other, adapters):
    run = execute(sampling_graph(layout, adapters[other]))
    assert not run.ok
    names = {"sd15": "SD1.5", "sdxl": "SDXL"}
    assert f"trained for {names[other]}" in run.error_message and f"model is {names[layout]}" in run.error_message
    assert "Use an IQA-Adapter made for this base model" in run.error_message


@pytest.mark.parametrize(
    "targets,mode,match",
    [
        ("101", "percentile", "outside 0-100"),
        ("nan", "z-score", "finite"),
        ("1; 2; 3", "percentile", "3 targets but the latent batch is 1"),
    ],
)
def test_bad_targets_are_execution_errors(targets, mode, match, adapters):
    run = execute(sampling_graph("sd15", adapters["sd15"], targets=targets, mode=mode))
    assert not run.ok and match in run.error_message


def test_missing_adapter_file_is_rejected_by_validation(adapters):
    run = execute(sampling_graph("sd15", "no_such_adapter.safetensors"))
    assert not run.ok and "no_such_adapter.safetensors" in run.error_message


def test_nodes_have_tooltips_and_descriptions():
    import conftest

    for node_id in ("IQAAdapterLoader", "IQAQualityCondition"):
        cls = conftest.HOST_NODES.NODE_CLASS_MAPPINGS[node_id]
        assert cls.DESCRIPTION and cls.CATEGORY == "IQA-Adapter"
        for group in cls.INPUT_TYPES().values():
            for name, spec in group.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_target_errors_name_the_input(adapters):
    run = execute(sampling_graph("sd15", adapters["sd15"], targets="150"))
    assert not run.ok and run.error_message.startswith("targets: ")
