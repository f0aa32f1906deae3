"""The toy refiner's block phase (config refine_phase): a learned bias per position in the 8 px grid, so the
refiner's shift-invariant convolutions can tell a JPEG block edge from any other edge. Checkpoints made
without it keep their tensors; adding it to a trained refiner changes nothing until it is trained."""

from __future__ import annotations

import conftest  # noqa: F401  (starts the host; toy/ is imported from the repo root)
import torch
from helpers import run_unet

from toy.model import build_model, default_config
from toy.sources import SOURCES
from toy.text import build_vocab
from toy.train_base import _load_init
from toy.unet import Refiner

VOCAB = build_vocab(sorted({s.caption for s in SOURCES}))


def _unet(patcher):
    return patcher.get_model_object("diffusion_model")


def _run(patcher, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(1, 192, 8, 8, generator=g), torch.randn(1, 8, 64, generator=g)
    return run_unet(patcher, x, ctx, sigma=0.1)


def test_a_checkpoint_without_the_phase_keeps_its_tensors():
    """Old files load as they are: no phase, no new key; a model with it has exactly one more tensor."""
    old = _unet(build_model(default_config(VOCAB), seed=0)).state_dict()
    cfg = {**default_config(VOCAB), "refine_phase": 8}
    new = _unet(build_model(cfg, seed=0)).state_dict()
    assert not any("phase" in k for k in old)
    assert set(new) - set(old) == {"refine.phase"}
    assert new["refine.phase"].shape == (2, 24, 8, 8)
    assert not new["refine.phase"].any(), "a new phase starts at zero"


def test_adding_the_phase_to_a_trained_refiner_changes_nothing():
    """train_base --init --refine-phase 8: the bias starts as an exact no-op, and acts once trained."""
    old = build_model(default_config(VOCAB), seed=5)
    with torch.no_grad():
        _unet(old).refine[4].weight.normal_(0, 0.3)  # a trained refiner is not a no-op
    new = build_model({**default_config(VOCAB), "refine_phase": 8}, seed=0)
    _load_init(_unet(new), _unet(old).state_dict(), "x")
    assert torch.equal(_run(old), _run(new))
    with torch.no_grad():
        _unet(new).refine.phase.normal_(0, 0.3)
    assert not torch.equal(_run(old), _run(new)), "the phase must act once trained"


def test_the_bias_repeats_with_the_grid_on_any_image_size():
    """Pixel (y, x) gets the bias of (y mod 8, x mod 8), also where the image is not a multiple of 8."""
    refine = Refiner(24, 0, None, phase=8)
    with torch.no_grad():
        refine.phase.normal_()
    h = torch.zeros(2, 24, 20, 13)
    out = refine._phase(h, 1)
    ys, xs = torch.arange(20) % 8, torch.arange(13) % 8
    expected = refine.phase[1][:, ys][:, :, xs]
    assert torch.equal(out[0], expected) and torch.equal(out[1], expected)
    assert not torch.equal(refine._phase(h, 0), out), "each hidden layer has its own bias"
