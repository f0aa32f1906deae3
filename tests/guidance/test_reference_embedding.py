"""Reference embeddings from the topiq_nr ResNet-50 backbone (random weights, built offline by pyiqa)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import pack, random_iqa, tiny

A = pack.adapter
embedding = importlib.import_module(pack.__name__ + ".guidance.reference_embedding")
SPEC = A.embedding_spec.spec_from_dict({"spec": "topiq_nr_resnet50_meanstd"}, "test")


@pytest.fixture(scope="module")
def topiq():
    return random_iqa.load_random_iqa_model("topiq_nr")


def references(n=2, size=96, seed=0):
    """Host IMAGE batch [B, H, W, C]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, size, size + 16, 3, generator=g)


def independent_embedding(net, images):
    """Written from the spec's description: resize, run the backbone, per tap means then stds."""
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(384, 384), mode="bilinear", antialias=True, align_corners=False)
    feats = net.semantic_model(net.preprocess(x))[1:]  # act1 is not a tap; layer1..layer4 are
    parts = []
    for f in feats:
        parts += [f.mean(dim=(2, 3)), f.flatten(2).std(dim=2, unbiased=False)]
    return torch.cat(parts, 1)


def test_embedding_is_deterministic_and_matches_an_independent_computation(topiq):
    x = references()
    e1 = embedding.embed_reference(topiq, x, SPEC)
    e2 = embedding.embed_reference(topiq, x, SPEC)
    assert e1.shape == (2, SPEC.dim) == (2, 7680)
    assert torch.equal(e1, e2)
    with torch.no_grad():
        torch.testing.assert_close(e1, independent_embedding(topiq.net, x), atol=1e-5, rtol=1e-4)
    # Layout: [mean(layer1) 256, std(layer1) 256, mean(layer2) 512, ...]
    assert (e1[:, 256:512] >= 0).all() and (e1[:, 1024:1536] >= 0).all()


def test_different_references_give_different_tokens(topiq, tmp_path):
    x = references(1)
    blurred = F.avg_pool2d(x.permute(0, 3, 1, 2), 5, stride=1, padding=2).permute(0, 2, 3, 1)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    e = embedding.embed_reference(topiq, torch.cat([x, blurred, noisy]), SPEC)
    assert (e[0] - e[1]).abs().max() > 1e-4 and (e[0] - e[2]).abs().max() > 1e-4
    path = tiny.write_adapter(
        tmp_path / "ref.safetensors",
        "sd15",
        {"kind": "reference", "embedding": {"spec": SPEC.name}},
        input_dim=SPEC.dim,
    )
    adapter = A.IQAAdapter.load(path)
    toks = adapter.tokens(e)
    assert (toks[0] - toks[1]).abs().max() > 1e-4 and (toks[1] - toks[2]).abs().max() > 1e-4


@pytest.mark.parametrize("channels,expect", [(4, "RGB"), (1, "grey"), (3, "RGB")])
def test_rgba_and_greyscale_references_are_converted(channels, expect, topiq):
    img = torch.rand(1, 40, 48, channels)
    out = embedding.reference_batch(topiq, img)
    assert out.shape == (1, 3, 40, 48)
    if expect == "grey":
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    else:
        assert torch.equal(out[0].permute(1, 2, 0), img[0, ..., :3])


@pytest.mark.parametrize(
    "shape,match", [((1, 16, 64, 3), "at least 32 px"), ((0, 64, 64, 3), "empty"), ((1, 64, 64, 5), "5 channels")]
)
def test_bad_references_are_named(shape, match, topiq):
    with pytest.raises(A.IQAAdapterError, match=match):
        embedding.reference_batch(topiq, torch.rand(*shape))


def test_spec_that_disagrees_with_the_checkpoint_fails_at_load(tmp_path):
    path = tiny.write_adapter(
        tmp_path / "r.safetensors", "sd15", {"kind": "reference", "embedding": {"spec": SPEC.name}}, input_dim=3840
    )
    with pytest.raises(A.IQAAdapterError, match="gives 7680 values, but the checkpoint's projection takes 3840"):
        A.IQAAdapter.load(path)
    mean_only = {"kind": "reference", "embedding": {"spec": SPEC.name, "pooling": "mean"}}
    assert A.IQAAdapter.load(path, mean_only).embedding_spec.dim == 3840  # expressible without code changes


def test_reference_adapter_without_spec_and_unknown_tap(tmp_path, topiq):
    path = tiny.write_adapter(tmp_path / "n.safetensors", "sd15", {"kind": "reference"}, input_dim=16)
    with pytest.raises(A.IQAAdapterError, match="needs an 'embedding' spec"):
        A.IQAAdapter.load(path)
    bad = A.embedding_spec.spec_from_dict(
        {"metric": "topiq_nr", "taps": ["semantic_model.layer9"], "channels": [8]}, "t"
    )
    with pytest.raises(A.IQAAdapterError, match="no layer 'semantic_model.layer9'.*Did you mean"):
        embedding.embed_reference(topiq, references(1), bad)


def test_imagenet_normalization_reaches_the_network(topiq):
    """normalize 'imagenet' is applied once, before the network, and not clamped back to [0, 1] on the way."""
    spec = A.embedding_spec.spec_from_dict({"spec": "topiq_nr_resnet50_meanstd", "normalize": "imagenet"}, "test")
    seen = []
    handle = topiq.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        embedding.embed_reference(topiq, references(n=1), spec)
    finally:
        handle.remove()
    x = references(n=1).permute(0, 3, 1, 2)
    expected = embedding.preprocess(x, spec)
    assert seen[0].min() < 0 and seen[0].max() > 1  # ImageNet-normalized values, not clamped images
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-6)
