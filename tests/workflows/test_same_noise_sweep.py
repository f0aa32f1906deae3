"""Same initial noise across a sweep: the quality sweep (and degradation) examples put the host's Batch
Latent Seed Behavior (fixed) between Empty Latent Image and the KSampler, so every batch item starts from
the same noise and the items differ only by their targets.

Through the real host's prompt queue (tests/server_host.py; IQA_HOST picks the fork, upstream or fork2026), on the
tiny fixtures: at adapter scale 0 the five saved images are identical; at scale 1 they are not; and the same
graph without the node gives five different images at scale 0, so the node is what makes them equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import server_host
from helpers import SAME_LEVELS
from PIL import Image

pytestmark = pytest.mark.server

SWEEP = "sdxl_quality_sweep"
SEED_NODE = "LatentBatchSeedBehavior"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with server_host.running_host(tmp_path_factory.mktemp("same_noise")) as h:
        yield h


def _of(prompt: dict, class_type: str) -> tuple[str, dict]:
    found = [(i, n) for i, n in prompt.items() if n["class_type"] == class_type]
    assert len(found) == 1, (class_type, found)
    return found[0]


def _sweep(host, scale: float, same_noise: bool = True) -> dict:
    """The tiny sweep at this adapter scale; without the score branch (not what is checked here), and
    with the KSampler fed straight from Empty Latent Image when same_noise is False."""
    prompt = host.tiny_prompt(SWEEP)
    _of(prompt, "IQAQualityCondition")[1]["inputs"]["scale"] = scale
    for node_id in [i for i, n in prompt.items() if n["class_type"] in ("IQAScore", "PreviewImage", "IQALoadModel")]:
        del prompt[node_id]
    seed_id, seed_node = _of(prompt, SEED_NODE)
    assert seed_node["inputs"]["seed_behavior"] == "fixed"
    sampler = _of(prompt, "KSampler")[1]
    assert sampler["inputs"]["latent_image"] == [seed_id, 0], "the node sits between the latent and the sampler"
    assert prompt[seed_node["inputs"]["samples"][0]]["class_type"] == "EmptyLatentImage"
    if not same_noise:
        sampler["inputs"]["latent_image"] = seed_node["inputs"]["samples"]
        del prompt[seed_id]
    return prompt


def _images(host, prompt: dict) -> list[np.ndarray]:
    entry = host.run(prompt, timeout=300)
    save_id, _ = _of(prompt, "SaveImage")
    paths = host.output_images(entry)[save_id]
    assert len(paths) == 5, paths
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in paths]


def _max_diff_to_first(images: list[np.ndarray]) -> list[int]:
    return [int(np.abs(im - images[0]).max()) for im in images[1:]]


# Items differ by up to 255 levels when their noise or targets differ (measured: 255 for every item against
# item 0, in both cases); the tests below ask for more than 10 x SAME_LEVELS.


def test_at_scale_zero_every_target_gives_the_same_image(host):
    diffs = _max_diff_to_first(_images(host, _sweep(host, scale=0.0)))
    assert max(diffs) <= SAME_LEVELS, f"items differ from item 0 by up to {diffs} levels of 255"


def test_the_node_is_what_makes_the_items_equal(host):
    """Without it the host draws each item's noise separately: the items differ widely at scale 0."""
    diffs = _max_diff_to_first(_images(host, _sweep(host, scale=0.0, same_noise=False)))
    assert min(diffs) > 10 * SAME_LEVELS, diffs


def test_with_the_adapter_on_the_targets_differ(host):
    """Same noise, scale 1: the five targets give five different images (so the check above can fail)."""
    diffs = _max_diff_to_first(_images(host, _sweep(host, scale=1.0)))
    assert min(diffs) > 10 * SAME_LEVELS, diffs


def test_the_degradation_example_also_starts_every_item_from_the_same_noise(host):
    prompt = host.tiny_prompt("sdxl_degradation")
    seed_id, seed_node = _of(prompt, SEED_NODE)
    assert seed_node["inputs"]["seed_behavior"] == "fixed"
    assert _of(prompt, "KSampler")[1]["inputs"]["latent_image"] == [seed_id, 0]


def test_fixed_batch_index_gives_identical_noise_in_the_host():
    """The host mechanism itself, in-process on the fork: prepare_noise draws one tensor per distinct
    batch_index, so equal indices give bitwise equal noise, and no index gives different noise per item."""
    import torch
    from comfy import sample

    latent = torch.zeros(5, 4, 8, 8)
    same = sample.prepare_noise(latent, 42, [0] * 5)
    assert all(torch.equal(same[0], same[i]) for i in range(1, 5))
    assert torch.equal(same[0], sample.prepare_noise(latent, 42)[0]), "item 0 keeps the noise it had"
    default = sample.prepare_noise(latent, 42, None)
    assert not any(torch.equal(default[0], default[i]) for i in range(1, 5))
