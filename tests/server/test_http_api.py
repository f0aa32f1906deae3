"""Server level: the real host's HTTP server and prompt queue, in a subprocess, as users and scripts meet it.

One server for the module (tests/server_host.py): this pack and the test-only fixture pack in its
custom_nodes/, tiny random adapters in models/iqa_adapter. Every example workflow is converted from its UI
file with the server's own /object_info, its model loaders swapped for tiny stand-ins
(scripts/workflow_fixtures.py), POSTed to /prompt and followed through /history.
"""

from __future__ import annotations

import math
import re

import conftest
import pytest
import server_host
import workflow_docs  # noqa: E402
import workflow_host  # noqa: E402
from server_host import PromptFailed, PromptRejected

pytestmark = pytest.mark.server

NAMES = server_host.example_names()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with server_host.running_host(tmp_path_factory.mktemp("server")) as h:
        yield h


def test_the_server_is_the_host_asked_for(host):
    """IQA_HOST=upstream or fork2026 must really serve from that ComfyUI (it reports its version; the fork does
    not)."""
    system = host.get("/system_stats")["system"]
    kind = server_host.host()
    if kind.current:
        assert system.get("comfyui_version") == kind.version(), system
    else:
        assert "comfyui_version" not in system, system


def test_object_info_lists_every_pack_node_with_the_documented_inputs(host):
    documented = workflow_docs.parse_reference(workflow_docs.NODE_DOC.read_text())
    served = {k: v for k, v in host.info.items() if v.get("category") == workflow_docs.PACK_CATEGORY}
    assert set(served) == set(documented), "docs/nodes.md node reference and the host disagree on the node list"
    assert set(served) == set(conftest.pack.NODE_CLASS_MAPPINGS)
    for node_id, info in served.items():
        inputs = [n for g in ("required", "optional") for n in (info["input"].get(g) or {})]
        assert inputs == documented[node_id], (
            f"{node_id}: the host has {inputs}, docs/nodes.md documents {documented[node_id]}"
        )
        assert info["display_name"] != node_id and info["description"], f"{node_id}: display name and description"
        if server_host.host().current:  # the editor's pack badge and help path (the pack names it on fork2026)
            assert info["python_module"] == f"custom_nodes.{workflow_host.PACK_NAME}", info["python_module"]
        for group in ("required", "optional"):
            for name, spec in (info["input"].get(group) or {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def _score_tables(entry: dict, prompt: dict) -> dict[str, list[float]]:
    """Scores that each IQA Score node recorded in the history (its UI text), by node id."""
    out = {}
    for node_id, node in prompt.items():
        if node["class_type"] != "IQAScore":
            continue
        text = "\n".join(entry["outputs"][node_id]["text"])
        rows = [line.split("\t") for line in text.splitlines() if re.match(r"^\d+\t", line)]
        out[node_id] = [float(r[1]) for r in rows]
    return out


def _expected_batch(prompt: dict, node_id: str) -> int:
    """Images an IMAGE-producing chain ends with: the latent batch, the sum over an ImageBatch, or the k that
    IQA Best of N keeps in its 'best k' mode (of the batch it ranks)."""
    node = prompt[node_id]
    kind, inputs = node["class_type"], node["inputs"]
    if kind == "EmptyLatentImage":
        return int(inputs["batch_size"])
    if kind == "IQABestOfN" and inputs["mode"] == "best k":
        return min(int(inputs["k"]), _expected_batch(prompt, inputs["images"][0]))
    if kind == "ImageBatch":
        return _expected_batch(prompt, inputs["image1"][0]) + _expected_batch(prompt, inputs["image2"][0])
    if kind in ("IQATestPatternImage", "IQAScore"):  # IQA Score's IMAGE is one plot of the whole batch
        return 1
    for key in ("latent_image", "samples", "images", "image", "pixels"):
        if isinstance(inputs.get(key), list):
            return _expected_batch(prompt, inputs[key][0])
    raise AssertionError(f"cannot follow the batch through {kind}")


@pytest.mark.parametrize("name", NAMES)
def test_example_workflow_runs_through_the_prompt_queue(host, name):
    prompt = host.tiny_prompt(name)
    entry = host.run(prompt, timeout=300)
    assert entry["status"]["completed"] is True and entry["status"]["status_str"] == "success"
    files = host.output_images(entry)
    saved = [i for i, n in prompt.items() if n["class_type"] == "SaveImage"]
    assert saved, "every example saves its images"
    for node_id in saved:
        paths = files.get(node_id, [])
        assert len(paths) == _expected_batch(prompt, prompt[node_id]["inputs"]["images"][0]), (node_id, paths)
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    tables = _score_tables(entry, prompt)
    for node_id, scores in tables.items():
        n = _expected_batch(prompt, prompt[node_id]["inputs"]["image"][0])
        assert len(scores) == n and all(math.isfinite(s) for s in scores), (node_id, scores)
        plot_previews = [
            i for i, nd in prompt.items() if nd["class_type"] == "PreviewImage" and nd["inputs"]["images"][0] == node_id
        ]
        assert all(files.get(i) for i in plot_previews), "the score plot reached the history"
    has_score_node = any(n["class_type"] == "IQAScore" for n in prompt.values())
    assert bool(tables) == has_score_node


def _good_prompt(host) -> dict:
    return host.tiny_prompt("sdxl_quality_condition_t2i")


def _node_of(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)


def _bad(host, change) -> dict:
    prompt = _good_prompt(host)
    change(prompt)
    return prompt


def _rejected(host, prompt) -> dict:
    with pytest.raises(PromptRejected) as info:
        host.queue(prompt)
    assert info.value.status == 400
    return info.value.body


def _still_serving(host) -> None:
    assert host.alive()
    assert "IQAQualityCondition" in host.get("/object_info/IQAQualityCondition")
    prompt = _good_prompt(host)
    _node_of(prompt, "KSampler")["inputs"]["seed"] += 1  # not a cached repeat
    entry = host.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success"


def test_out_of_range_input_is_rejected_with_http_400_naming_it(host):
    body = _rejected(host, _bad(host, lambda p: _node_of(p, "IQAQualityCondition")["inputs"].update(scale=9.0)))
    text = str(body["node_errors"])
    assert "scale" in text and "IQAQualityCondition" in text
    _still_serving(host)


def test_missing_adapter_file_is_rejected_naming_the_input(host):
    body = _rejected(
        host, _bad(host, lambda p: _node_of(p, "IQAAdapterLoader")["inputs"].update(adapter_name="missing.safetensors"))
    )
    text = str(body["node_errors"])
    assert "adapter_name" in text and "missing.safetensors" in text
    _still_serving(host)


def test_out_of_range_target_fails_in_execution_naming_it(host):
    prompt = _bad(host, lambda p: _node_of(p, "IQAQualityCondition")["inputs"].update(targets="150"))
    with pytest.raises(PromptFailed) as info:
        host.run(prompt, timeout=300)
    error = info.value.error
    assert error["node_type"] == "IQAQualityCondition"
    # names the value and what it was taken as (the targets text, read as a target_mode percentile)
    assert re.search(r"target|percentile", error["exception_message"], re.I) and "150" in error["exception_message"]
    _still_serving(host)


def test_target_naming_an_unknown_metric_fails_naming_the_metric(host):
    prompt = _bad(host, lambda p: _node_of(p, "IQAQualityCondition")["inputs"].update(targets="musiq=99"))
    with pytest.raises(PromptFailed, match="musiq"):
        host.run(prompt, timeout=300)
    _still_serving(host)


def test_malformed_requests_get_http_400(host):
    status, body = host.request("/prompt", {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert status == 400, body
    status, body = host.request("/prompt", {"prompt": {}})
    assert status == 400, body
    _still_serving(host)
