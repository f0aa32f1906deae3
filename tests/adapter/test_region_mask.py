"""Regional quality: Quality Condition's mask input on tiny SD1.5- and SDXL-layout UNets built with the real
host's classes, against an independent reference, plus its batch rules and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import assert_relatively_close, inputs, install_reference, pack, ref_encode, ref_tokens, run_unet, tiny
from safetensors.torch import load_file

QC = pack.nodes.quality_condition.QualityCondition
META = {"metrics": ["topiq_nr", "laion_aes"], "use_flag": True, "pos_encode_L": 0}
IMAGE = 64  # helpers.inputs makes 8x8 latents: a 64 px image
_counter = itertools.count()
Error = pack.adapter.IQAAdapterError


@pytest.fixture
def make_adapter(adapter_dir):
    def make(layout="sd15", seed=0):
        path = tiny.write_adapter(adapter_dir / f"rm_{layout}_{next(_counter)}.safetensors", layout, META, seed=seed)
        return pack.adapter.IQAAdapter.load(path), load_file(str(path))

    return make


def condition(model, adapter, targets="2", scale=1.0, mask=None, start=0.0, end=1.0):
    return QC().apply(model, adapter, targets, "z-score", scale, start, end, "zeros", 0.5, mask=mask)[0]


def half(left: bool = True, batch: int = 1) -> torch.Tensor:
    m = torch.zeros(batch, IMAGE, IMAGE)
    m[:, :, : IMAGE // 2] = 1.0
    return m if left else 1.0 - m


def half_weights(left: bool):
    """The reference's weight on a square level of N tokens: the share of each token's column span that lies
    in the left (or right) half of the image (1 or 0, or 0.5 on a 1x1 level)."""

    def w(n: int) -> torch.Tensor:
        side = math.isqrt(n)
        col = (torch.arange(n) % side).float()
        share = ((0.5 - col / side) * side).clamp(0, 1)
        return (share if left else 1 - share).view(1, n, 1)

    return w


def test_token_grid_finds_each_unet_level_with_odd_sizes():
    grid = pack.adapter.region_mask.token_grid
    assert [grid(n, 9, 13) for n in (117, 35, 12, 4)] == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert grid(4096, 16, 16) == (64, 64), "a level above the grid: the toy's pixel refiner"
    with pytest.raises(Error, match="no level"):
        grid(50, 9, 13)


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_a_half_mask_applies_the_term_on_that_half_only(layout, make_adapter):
    adapter, sd = make_adapter(layout)
    x, ctx = inputs(layout, 2)
    got = run_unet(condition(tiny.tiny_model(layout), adapter, "1.5", 0.8, half()), x, ctx, cond_or_uncond=(1, 0))
    n = adapter.spec.num_tokens
    cond = ref_tokens(sd, ref_encode(torch.tensor([[1.5, 1.5]]), True, 0), n)
    uncond = ref_tokens(sd, torch.zeros(1, adapter.spec.input_dim), n)
    reference = tiny.tiny_model(layout)
    weights = half_weights(True)
    install_reference(reference, layout, [(sd, torch.cat([uncond, cond]), lambda k: 0.8 * weights(k))])
    want = run_unet(reference, x, ctx)
    unmasked = run_unet(condition(tiny.tiny_model(layout), adapter, "1.5", 0.8), x, ctx, cond_or_uncond=(1, 0))
    assert (want - unmasked).abs().max() > 1e-2  # the mask matters, so the match is not vacuous
    # Pack vs reference are different code paths in float32: compared by norm (helpers.UNET_REL_TOL).
    assert_relatively_close(got, want, what=f"{layout} half mask")


def test_stacked_conditions_each_with_its_own_mask(make_adapter):
    """p99 on the left with one adapter, p1 on the right with another: two masked terms on every layer."""
    (a1, sd1), (a2, sd2) = make_adapter("sd15"), make_adapter("sd15", seed=7)
    x, ctx = inputs("sd15", 1)
    model = condition(condition(tiny.tiny_model("sd15"), a1, "2.3", mask=half(True)), a2, "-2.3", mask=half(False))
    got = run_unet(model, x, ctx)
    reference = tiny.tiny_model("sd15")
    terms = [
        (sd1, ref_tokens(sd1, ref_encode(torch.tensor([[2.3, 2.3]]), True, 0), 2), half_weights(True)),
        (sd2, ref_tokens(sd2, ref_encode(torch.tensor([[-2.3, -2.3]]), True, 0), 2), half_weights(False)),
    ]
    install_reference(reference, "sd15", terms)
    assert_relatively_close(got, run_unet(reference, x, ctx), what="stacked masks")


def test_a_mask_of_ones_is_no_mask_bit_for_bit(make_adapter):
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 2)
    plain = run_unet(condition(tiny.tiny_model("sd15"), adapter), x, ctx)
    assert torch.equal(
        run_unet(condition(tiny.tiny_model("sd15"), adapter, mask=torch.ones(IMAGE, IMAGE)), x, ctx), plain
    )


def test_a_mask_of_zeros_is_scale_zero_bit_for_bit(make_adapter):
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 2)
    off = run_unet(condition(tiny.tiny_model("sd15"), adapter, scale=0.0), x, ctx)
    assert torch.equal(run_unet(condition(tiny.tiny_model("sd15"), adapter, mask=torch.zeros(1, 5, 7)), x, ctx), off)


def test_a_soft_mask_weighs_the_term(make_adapter):
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 2)
    soft = run_unet(condition(tiny.tiny_model("sd15"), adapter, mask=torch.full((1, 16, 16), 0.25)), x, ctx)
    quarter = run_unet(condition(tiny.tiny_model("sd15"), adapter, scale=0.25), x, ctx)
    assert_relatively_close(soft, quarter, what="mask 0.25 vs scale 0.25")  # addcmul vs add-with-alpha


def test_one_mask_per_item(make_adapter):
    """Item 0 under a mask of ones, item 1 under zeros: item 0 is conditioned, item 1 is the plain model."""
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 2)
    masks = torch.stack([torch.ones(IMAGE, IMAGE), torch.zeros(IMAGE, IMAGE)])
    got = run_unet(condition(tiny.tiny_model("sd15"), adapter, "2; 2", mask=masks), x, ctx)
    full = run_unet(condition(tiny.tiny_model("sd15"), adapter, "2; 2"), x, ctx)
    plain = run_unet(tiny.tiny_model("sd15"), x, ctx)
    assert (full[1] - plain[1]).abs().max() > 1e-2
    assert_relatively_close(got[0], full[0], what="item 0 (ones)")
    assert_relatively_close(got[1], plain[1], what="item 1 (zeros)")


def test_the_mask_follows_the_sigma_window(make_adapter):
    """Outside the window the masked term is off (the plain model); inside it is the masked term."""
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 1)
    model = tiny.tiny_model("sd15")
    windowed = condition(model, adapter, mask=half(), start=0.5, end=1.0)
    inside = pack.adapter.sigma_window(model, 0.5, 1.0)[0] / 2
    assert torch.equal(run_unet(windowed, x, ctx, sigma=1e4), run_unet(model, x, ctx, sigma=1e4))
    masked = run_unet(condition(model, adapter, mask=half()), x, ctx, sigma=inside)
    assert_relatively_close(run_unet(windowed, x, ctx, sigma=inside), masked, what="inside the window")


@pytest.mark.parametrize(
    "mask,match",
    [
        (torch.full((1, 8, 8), float("nan")), "NaN"),
        (torch.zeros(0, 8, 8), "empty"),
        (torch.zeros(1, 0, 8), "empty"),
        (torch.full((8, 8), 1.5), "from 1.5 to 1.5"),
        (torch.full((8, 8), -0.1), r"\[0, 1\]"),
        (torch.zeros(1, 1, 8, 8), "shape"),
        (torch.ones(3, 8, 8), "3 masks for 2 target items"),
        ([[1.0]], "connect a MASK"),
    ],
)
def test_bad_masks_are_refused_by_name_and_the_model_is_untouched(mask, match, make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    before = dict(model.model_options["transformer_options"])
    with pytest.raises(Error, match=match) as info:
        condition(model, adapter, "1; 2", mask=mask)
    assert str(info.value).startswith("mask")
    assert model.model_options["transformer_options"] == before


def test_a_mask_batch_that_fits_no_latent_batch_fails_at_sampling_with_the_fix(make_adapter):
    adapter, _ = make_adapter("sd15")
    x, ctx = inputs("sd15", 3)
    model = condition(tiny.tiny_model("sd15"), adapter, "1", mask=torch.ones(2, 8, 8) * 0.5)
    with pytest.raises(Error, match="2 masks but the latent batch is 3"):
        run_unet(model, x, ctx)
