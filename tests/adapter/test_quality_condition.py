"""Quality Condition on tiny SD1.5- and SDXL-layout UNets built with the real host's classes."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from helpers import (
    EXPECTED_SITES,
    assert_relatively_close,
    inputs,
    install_reference,
    pack,
    ref_encode,
    ref_tokens,
    run_unet,
    sample,
    tiny,
)
from safetensors.torch import load_file

QC = pack.nodes.quality_condition.QualityCondition
META = {"metrics": ["topiq_nr", "laion_aes"], "use_flag": True, "pos_encode_L": 0}
_counter = itertools.count()


@pytest.fixture
def make_adapter(adapter_dir):
    def make(layout="sd15", meta=META, **kw):
        path = tiny.write_adapter(adapter_dir / f"qc_{layout}_{next(_counter)}.safetensors", layout, meta, **kw)
        return pack.adapter.IQAAdapter.load(path), load_file(str(path))

    return make


def condition(model, adapter, targets="99", mode="percentile", scale=1.0, start=0.0, end=1.0, uncond="zeros", k=0.5):
    return QC().apply(model, adapter, targets, mode, scale, start, end, uncond, k)[0]


def attn2_patches(model):
    return model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_sites_follow_the_checkpoint_layer_order(layout):
    sites = pack.adapter.layers.find_attn2_sites(tiny.tiny_model(layout).get_model_object("diffusion_model"))
    assert [s.key for s in sites] == EXPECTED_SITES[layout]
    assert ("middle", 0, 0) in [s.key for s in sites]


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_every_attn2_layer_patched_once_with_its_own_layer(layout, make_adapter):
    adapter, _ = make_adapter(layout)
    patched = condition(tiny.tiny_model(layout), adapter)
    patches = attn2_patches(patched)
    assert sorted(patches) == sorted(EXPECTED_SITES[layout])
    for n, key in enumerate(EXPECTED_SITES[layout]):
        assert [layer for _, layer in patches[key].contributions] == [n]


def test_changing_one_key_moves_only_that_layer(make_adapter):
    adapter, sd = make_adapter("sdxl")
    n_changed = 37
    sd2 = dict(sd)
    sd2[f"ip_adapter.{2 * n_changed + 1}.to_v_ip.weight"] = sd[f"ip_adapter.{2 * n_changed + 1}.to_v_ip.weight"] * -2.0
    adapter2 = pack.adapter.IQAAdapter(
        adapter.spec, adapter.metadata, pack.adapter.checkpoint.split_flat_keys(sd2), "changed"
    )
    model = tiny.tiny_model("sdxl")
    p1, p2 = attn2_patches(condition(model, adapter)), attn2_patches(condition(model, adapter2))
    g = torch.Generator().manual_seed(1)
    moved = []
    for n, key in enumerate(EXPECTED_SITES["sdxl"]):
        hidden = adapter.spec.layer_shapes[n][0]
        q, k, v = (torch.randn(1, 5, hidden, generator=g) for _ in range(3))
        opts = {"n_heads": hidden // 16, "cond_or_uncond": [0]}
        # Bitwise: both patches run the same code on the same inputs and shapes; only layer 37's weights differ.
        if not torch.equal(p1[key](q, k, v, opts), p2[key](q, k, v, opts)):
            moved.append(n)
    assert moved == [n_changed]


@pytest.mark.parametrize(
    "layout,meta,proj",
    [
        ("sd15", META, "linear"),
        ("sdxl", META, "linear"),
        ("sd15", {"metrics": ["topiq_nr"], "use_flag": False, "pos_encode_L": 10}, "mlp"),
        ("sdxl", {"metrics": ["musiq", "liqe", "laion_aes"], "use_flag": True, "pos_encode_L": 4}, "linear"),
    ],
)
def test_prediction_matches_independent_reference(layout, meta, proj, make_adapter):
    adapter, sd = make_adapter(layout, meta, proj=proj, num_tokens=3 if proj == "mlp" else 2)
    z = torch.tensor([[1.5] * len(meta["metrics"]), [-0.7] * len(meta["metrics"])])
    patched = condition(tiny.tiny_model(layout), adapter, "1.5; -0.7", "z-score", scale=0.8)
    x, ctx = inputs(layout, 4)
    got = run_unet(patched, x, ctx, cond_or_uncond=(1, 0))

    cond = ref_tokens(sd, ref_encode(z, meta["use_flag"], meta["pos_encode_L"]), adapter.spec.num_tokens)
    uncond = ref_tokens(sd, torch.zeros(1, adapter.spec.input_dim), adapter.spec.num_tokens).expand(2, -1, -1)
    reference = tiny.tiny_model(layout)
    install_reference(reference, layout, [(sd, torch.cat([uncond, cond]), 0.8)])
    want = run_unet(reference, x, ctx)
    plain = run_unet(tiny.tiny_model(layout), x, ctx)
    assert (want - plain).abs().max() > 1e-2  # the quality term matters, so the match is not vacuous
    # Pack vs reference are different code paths in float32: compared by norm (helpers.UNET_REL_TOL).
    assert_relatively_close(got, want, what=f"{layout}/{proj}")


def test_negative_quality_mode_uses_minus_k_target(make_adapter):
    adapter, sd = make_adapter("sd15")
    patched = condition(tiny.tiny_model("sd15"), adapter, "2.0", "z-score", uncond="negative quality", k=0.5)
    x, ctx = inputs("sd15", 2)
    got = run_unet(patched, x, ctx, cond_or_uncond=(1, 0))
    enc = ref_encode(torch.tensor([[2.0, 2.0]]), True, 0)
    toks = torch.cat([ref_tokens(sd, -0.5 * enc, 2), ref_tokens(sd, enc, 2)])
    reference = tiny.tiny_model("sd15")
    install_reference(reference, "sd15", [(sd, toks, 1.0)])
    assert_relatively_close(got, run_unet(reference, x, ctx), what="negative quality")  # other code path: by norm


def test_scale_zero_equals_unpatched_model(make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    x, ctx = inputs("sd15", 2)
    plain = run_unet(model, x, ctx)
    assert torch.equal(run_unet(condition(model, adapter, scale=0.0), x, ctx), plain)  # bitwise: nothing is patched
    # A zero-scale term on every layer is also exactly the plain model (base + 0 * term is base, bit for bit).
    tokens = pack.adapter.quality_tokens(
        adapter,
        pack.adapter.build_targets(
            [{"topiq_nr": 99, "laion_aes": 99}],
            "percentile",
            adapter.metadata.metrics,
            True,
            pack.adapter.default_norm_table(),
        ),
        0.0,
    )
    zero = pack.adapter.attach_quality_tokens(model, adapter.spec, tokens, pack.nodes.host.host_attention, "t")
    assert torch.equal(run_unet(zero, x, ctx), plain)


def test_node_leaves_input_model_unchanged_and_clones_share_weights(make_adapter, host_clone):
    adapter, _ = make_adapter("sdxl")
    model = tiny.tiny_model("sdxl")
    before = copy.deepcopy(model.model_options)
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    patched = condition(model, adapter)
    assert model.model_options == before and attn2_patches(model) == {}
    after = model.model.state_dict()  # once: a state_dict per key took 30 s on SDXL's layout
    assert all(torch.equal(v, after[k]) for k, v in weights.items())
    again = patched.clone()
    key = EXPECTED_SITES["sdxl"][0]
    a, b = attn2_patches(patched)[key], attn2_patches(again)[key]
    assert attn2_patches(again) is not attn2_patches(patched)  # every host copies the tables
    assert (a is b) == (host_clone == "newest")  # the newest host shares the patch object itself
    assert a.contributions[0][0] is b.contributions[0][0]  # the K/V holder is shared on every host, not copied


class MovingPatch:
    """A foreign attn2 patch whose .to() returns a new object (as a patch holding weights may)."""

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype

    def __call__(self, q, k, v, extra_options):
        return pack.nodes.host.host_attention(q, k, v, extra_options["n_heads"])

    def to(self, target):
        return MovingPatch(target) if isinstance(target, torch.dtype) else self


def test_moving_a_clone_leaves_the_parent_patch_alone(make_adapter, host_clone):
    """The host moves a clone's patches with .to() and stores the result in the clone's table. With the newest
    host the clone's table holds the parent's patch objects, so .to() must not change one in place."""
    adapter, _ = make_adapter("sd15")
    site = EXPECTED_SITES["sd15"][3]
    model = tiny.tiny_model("sd15").clone()
    model.set_model_attn2_replace(MovingPatch(), *site)
    parent = condition(model, adapter)
    child = parent.clone()
    child.model_patches_to(torch.float16)
    assert attn2_patches(child)[site].inner.dtype == torch.float16
    assert attn2_patches(parent)[site].inner.dtype == torch.float32  # the parent's patch kept its inner patch
    assert attn2_patches(child)[site].contributions == attn2_patches(parent)[site].contributions


def test_branches_from_one_conditioned_model_run_as_if_alone(make_adapter, host_clone):
    """Two Quality Conditions stacked on one conditioned model, one per branch, and the trunk itself: each
    gives what it gives when built and run alone, whatever ran before it on the shared patch objects."""
    (a1, _), (a2, _) = make_adapter("sd15"), make_adapter("sd15", seed=7)
    x, ctx = inputs("sd15", 1)

    def build():
        trunk = condition(tiny.tiny_model("sd15"), a1, "1.0", "z-score")
        return trunk, condition(trunk, a2, "-1.0", "z-score"), condition(trunk, a2, "2.0", "z-score", scale=0.5)

    alone = [run_unet(m, x, ctx) for m in build()]  # each from a fresh graph
    trunk, low, high = build()
    together = [run_unet(m, x, ctx) for m in (low, high, trunk, low)]
    # Bitwise: the same patches on the same inputs; only what ran before differs.
    assert torch.equal(together[0], alone[1]) and torch.equal(together[3], alone[1])
    assert torch.equal(together[1], alone[2]) and torch.equal(together[2], alone[0])
    assert (alone[1] - alone[2]).abs().max() > 1e-3 and (alone[0] - alone[1]).abs().max() > 1e-3


def test_two_adapters_stack(make_adapter, host_clone):
    (a1, sd1), (a2, sd2) = make_adapter("sd15"), make_adapter("sd15", seed=7)
    patched = condition(
        condition(tiny.tiny_model("sd15"), a1, "1.0", "z-score", scale=0.5), a2, "-1.0", "z-score", scale=1.5
    )
    assert all(len(p.contributions) == 2 for p in attn2_patches(patched).values())
    x, ctx = inputs("sd15", 1)
    reference = tiny.tiny_model("sd15")
    t1 = ref_tokens(sd1, ref_encode(torch.tensor([[1.0, 1.0]]), True, 0), 2)
    t2 = ref_tokens(sd2, ref_encode(torch.tensor([[-1.0, -1.0]]), True, 0), 2)
    install_reference(reference, "sd15", [(sd1, t1, 0.5), (sd2, t2, 1.5)])
    assert_relatively_close(run_unet(patched, x, ctx), run_unet(reference, x, ctx), what="two adapters")  # by norm


@pytest.mark.parametrize("key_form", ["full", "block"])
def test_foreign_attn2_patch_is_wrapped_and_still_runs(key_form, make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15").clone()
    calls = []
    site = EXPECTED_SITES["sd15"][3]

    def foreign(q, k, v, extra_options):
        calls.append(1)
        return torch.zeros_like(q)  # a patch whose effect is unmistakable

    model.set_model_attn2_replace(foreign, *(site if key_form == "full" else site[:2]))
    patched = condition(model, adapter)
    wrapped = attn2_patches(patched)[site]
    assert wrapped.inner is foreign
    x, ctx = inputs("sd15", 1)
    run_unet(patched, x, ctx)
    assert calls, "the foreign patch was dropped"
    q = torch.randn(1, 4, 64)
    opts = {"n_heads": 4, "cond_or_uncond": [0]}
    term_only = wrapped(q, q, q, opts)
    plain_ip = pack.adapter.DecoupledCrossAttention(wrapped.contributions, pack.nodes.host.host_attention)(
        q, q, q, opts
    )
    base = pack.nodes.host.host_attention(q, q, q, 4)
    torch.testing.assert_close(term_only, plain_ip - base, atol=1e-5, rtol=1e-4)


def test_batch_of_targets_conditions_each_item(make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    x1, ctx1 = inputs("sd15", 1)
    x, ctx = x1.repeat(3, 1, 1, 1), ctx1.repeat(3, 1, 1)
    sweep = run_unet(condition(model, adapter, "1; 50; 99"), x, ctx)
    same = run_unet(condition(model, adapter, "99"), x, ctx)
    assert (sweep[0] - sweep[2]).abs().max() > 1e-3 and (sweep[0] - sweep[1]).abs().max() > 1e-3
    # Item 3 is p99 in both, but its tokens come from a batch of three targets in one run and from a single
    # broadcast target in the other (other GEMM shapes): equal up to rounding, compared by norm.
    assert_relatively_close(sweep[2], same[2], what="p99 item of a sweep vs a batch of p99")
    # One target broadcasts to every item. Rows 1 and 3 of one batch may fall in different GEMM tiles
    # (main vs edge kernels), so this is a rounding-level comparison too; a wrong target moves 0.8 of the norm.
    assert_relatively_close(same[0], same[2], what="broadcast target, items 1 and 3")
    with pytest.raises(pack.adapter.IQAAdapterError, match="3 targets but the latent batch is 2"):
        run_unet(condition(model, adapter, "1; 50; 99"), x[:2], ctx[:2])


def test_start_end_percent_gate_the_term_by_sigma(make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    sampling = model.get_model_object("model_sampling")
    patched = condition(model, adapter, start=0.5, end=1.0)
    x, ctx = inputs("sd15", 1)
    early, late = sampling.percent_to_sigma(0.2), sampling.percent_to_sigma(0.8)
    # Bitwise: outside the window the patch runs the host's own attention on the same inputs and shapes.
    assert torch.equal(run_unet(patched, x, ctx, sigma=early), run_unet(model, x, ctx, sigma=early))
    assert not torch.equal(run_unet(patched, x, ctx, sigma=late), run_unet(model, x, ctx, sigma=late))


@pytest.mark.parametrize("backend", ["attention_sub_quad", "attention_pytorch", "attention_basic"])
def test_every_host_attention_backend_gives_the_same_result(backend, make_adapter, monkeypatch):
    from comfy.ldm.modules import attention

    adapter, _ = make_adapter("sd15")
    patched = condition(tiny.tiny_model("sd15"), adapter)
    x, ctx = inputs("sd15", 2)
    want = run_unet(patched, x, ctx, cond_or_uncond=(1, 0))
    monkeypatch.setattr(attention, "optimized_attention", getattr(attention, backend))
    # Elementwise, but the 1e-4 floor is 1.7e-4 of the output's RMS (0.6): 40x the largest difference between
    # backends measured with AVX-512, AVX2 and default kernels (2.3e-6); a missing term moves 0.75 of the norm.
    torch.testing.assert_close(run_unet(patched, x, ctx, cond_or_uncond=(1, 0)), want, atol=1e-4, rtol=1e-4)


def test_half_precision_kv_follow_the_query_dtype(make_adapter):
    adapter, _ = make_adapter("sd15")
    patch = attn2_patches(condition(tiny.tiny_model("sd15"), adapter))[EXPECTED_SITES["sd15"][0]]
    q = torch.randn(2, 4, 32, dtype=torch.bfloat16)
    out = patch.to(torch.bfloat16)(q, q, q, {"n_heads": 2, "cond_or_uncond": [1, 0]})
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


FOREIGN_CALLS: list[tuple] = []  # module level: older hosts' clones deep-copy patch objects, and their counters


class ForeignPatch:
    """Another pack's attn2 replace patch: plain attention plus a constant, so its effect is unmistakable."""

    def __call__(self, q, k, v, extra_options):
        FOREIGN_CALLS.append(extra_options["block"])
        return pack.nodes.host.host_attention(q, k, v, extra_options["n_heads"]) + 0.25


@pytest.mark.parametrize("key_form", ["full", "block"])
@pytest.mark.parametrize("order", ["foreign first", "quality first"])
def test_stacking_with_a_foreign_attn2_patch_in_either_order(order, key_form, make_adapter, caplog, host_clone):
    """Both terms run in every order the host allows. The one it does not (a later full-key patch replaces
    the pack's) is logged with the other patch's name and the order that works."""
    adapter, _ = make_adapter("sd15")
    site = EXPECTED_SITES["sd15"][3]
    key = site if key_form == "full" else site[:2]
    foreign = ForeignPatch()

    def add_foreign(model):
        model = model.clone()
        model.set_model_attn2_replace(foreign, *key)
        return model

    x, ctx = inputs("sd15", 1)
    plain = tiny.tiny_model("sd15")
    quality_only = run_unet(condition(plain, adapter), x, ctx)
    foreign_only = run_unet(add_foreign(plain), x, ctx)
    stacked = (
        condition(add_foreign(plain), adapter) if order == "foreign first" else add_foreign(condition(plain, adapter))
    )
    FOREIGN_CALLS.clear()
    with caplog.at_level("WARNING"):
        out = run_unet(stacked, x, ctx)
    warnings = [r.getMessage() for r in caplog.records if "replaced the IQA-Adapter patch" in r.getMessage()]
    assert FOREIGN_CALLS == [site[:2]]  # the foreign patch ran, once, on its layer
    assert (out - quality_only).abs().max() > 1e-3 and (out - foreign_only).abs().max() > 1e-3
    on_layer = attn2_patches(stacked)[site]
    if order == "quality first" and key_form == "full":  # the host calls only the later patch on that layer
        assert on_layer is not None and not getattr(on_layer, "is_iqa_adapter_patch", False)
        assert len(warnings) == 1 and "ForeignPatch" in warnings[0] and "Apply that node first" in warnings[0], warnings
        assert "1 of 16" in warnings[0]
        return
    assert not warnings, warnings
    # Both terms on that layer: the pack's patch there equals the foreign base plus the pack's own term.
    q = torch.randn(1, 4, 64)
    alone = {"n_heads": 4, "cond_or_uncond": [0], "block": site[:2]}
    opts = dict(alone, **{pack.adapter.patch_watch.LIVE_ATTN2_KEY: attn2_patches(stacked)})  # as the watch hands it on
    plain_ip = pack.adapter.DecoupledCrossAttention(on_layer.contributions, pack.nodes.host.host_attention)(
        q, q, q, alone
    )
    base = pack.nodes.host.host_attention(q, q, q, 4)
    FOREIGN_CALLS.clear()
    # The host attention inside both is the same call on the same inputs (bitwise); only the order of the
    # two additions differs, a few ulp of values below 4 (1e-6), 10x under the tolerance.
    torch.testing.assert_close(on_layer(q, q, q, opts), plain_ip + 0.25, atol=1e-5, rtol=1e-4)
    assert FOREIGN_CALLS == [site[:2]] and (plain_ip - base).abs().max() > 1e-3


def test_the_watch_is_installed_once_and_shared_by_clones(make_adapter, host_clone):
    adapter, _ = make_adapter("sd15")
    twice = condition(condition(tiny.tiny_model("sd15"), adapter), adapter).clone()
    watches = [
        p
        for p in twice.model_options["transformer_options"]["patches"]["input_block_patch"]
        if getattr(p, "is_iqa_adapter_watch", False)
    ]
    assert len(watches) == 1 and watches[0].site_keys == tuple(EXPECTED_SITES["sd15"])


def rename_middle_block(model, new_id: int) -> None:
    """Make the host pass ("middle", new_id) as the middle block's id, as a host that renamed it would: the
    middle block's transformer sets it before its attention layers look their patches up."""
    transformer = model.get_model_object("diffusion_model").middle_block[1]
    real = transformer.forward

    def forward(x, context=None, transformer_options=None, **kwargs):
        transformer_options = {} if transformer_options is None else transformer_options  # the host always passes it
        transformer_options["block"] = ("middle", new_id)
        return real(x, context, transformer_options=transformer_options, **kwargs)

    transformer.forward = forward


@pytest.mark.parametrize("host", ["as tested", "renamed middle block"])
def test_patched_sites_that_never_run_are_logged_once(host, make_adapter, caplog, host_clone):
    """After the first step, one warning names every patched site the host never called, and why it may be;
    a normal run logs none. Later steps and runs add nothing."""
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    if host == "renamed middle block":
        rename_middle_block(model, 1)
    patched = condition(model, adapter)
    with caplog.at_level("WARNING"):
        sample(patched, steps=3, size=32)
        sample(patched.clone(), steps=2, size=32)  # a clone shares the watch: still one warning
    warnings = [r.getMessage() for r in caplog.records if "never ran" in r.getMessage()]
    if host == "as tested":
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    assert "1 of 16" in warnings[0] and "('middle', 0, 0)" in warnings[0] and adapter.name in warnings[0]
    assert "renamed a block" in warnings[0]


# -- per-block weights (block_weights) ----------------------------------------------------------------------


def weighted(model, adapter, block_weights, **kw):
    return QC().apply(
        model,
        adapter,
        "99",
        "percentile",
        kw.get("scale", 1.0),
        kw.get("start", 0.0),
        1.0,
        "zeros",
        0.5,
        block_weights=block_weights,
    )[0]


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
@pytest.mark.parametrize("text", ["all: 1", "input: 1, middle: 1, output: 1", ""])
def test_block_weights_all_ones_is_the_node_without_them_bit_for_bit(layout, text, make_adapter):
    adapter, _ = make_adapter(layout)
    model = tiny.tiny_model(layout)
    x, ctx = inputs(layout, 2)
    want = run_unet(condition(model, adapter), x, ctx, cond_or_uncond=(1, 0))
    patched = weighted(model, adapter, text)
    assert sorted(attn2_patches(patched)) == sorted(EXPECTED_SITES[layout])
    assert torch.equal(run_unet(patched, x, ctx, cond_or_uncond=(1, 0)), want)  # the same tensors, the same code


@pytest.mark.parametrize("text", ["all: 0", "input: 0; middle: 0; output: 0"])
def test_block_weights_all_zeros_is_scale_zero(text, make_adapter):
    adapter, _ = make_adapter("sdxl")
    model = tiny.tiny_model("sdxl")
    x, ctx = inputs("sdxl", 2)
    patched = weighted(model, adapter, text)
    assert attn2_patches(patched) == {}  # nothing patched, no watch: costs what scale 0 costs
    assert torch.equal(run_unet(patched, x, ctx), run_unet(weighted(model, adapter, "", scale=0.0), x, ctx))
    assert torch.equal(run_unet(patched, x, ctx), run_unet(model, x, ctx))


def test_a_partial_block_weight_changes_only_the_named_blocks_term(make_adapter):
    """output 2 off, the input group at 0.5, the rest at 1: compared site by site on the same q, k, v."""
    adapter, _ = make_adapter("sdxl")
    model = tiny.tiny_model("sdxl")
    full = attn2_patches(condition(model, adapter))
    part = attn2_patches(weighted(model, adapter, "input: 0.5, output 2: 0, middle: 1"))
    g = torch.Generator().manual_seed(4)
    for n, key in enumerate(EXPECTED_SITES["sdxl"]):
        if key[:2] == ("output", 2):
            assert key not in part  # weight 0: the layer is left to the host
            continue
        hidden = adapter.spec.layer_shapes[n][0]
        q, k, v = (torch.randn(2, 5, hidden, generator=g) for _ in range(3))
        opts = {"n_heads": hidden // 16, "cond_or_uncond": [1, 0]}
        base = pack.nodes.host.host_attention(q, k, v, hidden // 16)
        term_full, term_part = full[key](q, k, v, opts) - base, part[key](q, k, v, opts) - base
        assert term_full.abs().max() > 1e-3, key  # the term is there, so the comparison means something
        if key[0] == "input":
            torch.testing.assert_close(term_part, 0.5 * term_full, atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(term_part, term_full), key  # unnamed blocks: bit for bit as without weights


def test_block_weights_keep_the_sigma_window_stacking_and_a_foreign_patch(make_adapter, host_clone):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15").clone()
    foreign_site, other_site = ("output", 3, 0), ("input", 1, 0)

    def foreign(q, k, v, extra_options):
        return torch.zeros_like(q)

    model.set_model_attn2_replace(foreign, *foreign_site)
    model.set_model_attn2_replace(foreign, *other_site)
    once = weighted(model, adapter, "output 3: 0", start=0.5)
    table = attn2_patches(once)
    assert table[foreign_site] is foreign  # weight 0 there: the other pack's patch is left as it was
    assert table[other_site].inner is foreign  # weighted sites still wrap it
    twice = attn2_patches(condition(once, adapter, "1"))
    assert len(twice[foreign_site].contributions) == 1 and len(twice[other_site].contributions) == 2
    sampling = model.get_model_object("model_sampling")
    early = sampling.percent_to_sigma(0.2)
    x, ctx = inputs("sd15", 1)
    assert torch.equal(run_unet(once, x, ctx, sigma=early), run_unet(model, x, ctx, sigma=early))


def test_block_weight_errors_name_the_input_and_list_the_valid_blocks(make_adapter):
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    err = pack.adapter.IQAAdapterError
    with pytest.raises(
        err,
        match=r"block_weights: unknown block 'output 1' for SD1.5. Valid names: all, input, middle, "
        r"output, input 1, input 2, input 4, input 5, input 7, input 8, middle 0, output 3,",
    ):
        weighted(model, adapter, "output 1: 0")
    with pytest.raises(err, match=r"block_weights: the weight of 'input' is -0.5; give a finite number >= 0"):
        weighted(model, adapter, "input: -0.5")
    with pytest.raises(err, match=r"block_weights: the weight of 'middle' is nan; give a finite number >= 0"):
        weighted(model, adapter, "middle: nan")
    with pytest.raises(err, match=r"block_weights: 'input 4' is given twice"):
        weighted(model, adapter, "input 4: 1, input4: 0")
    with pytest.raises(err, match=r"block_weights: cannot read 'input 0.5'"):
        weighted(model, adapter, "input 0.5")


def test_block_names_come_from_the_layout_table_for_every_family():
    bw, layouts = pack.adapter.block_weights, pack.adapter.unet_layouts
    toy_sites = [("input", 3, 0), ("output", 2, 0), ("output", 3, 0), ("middle", 0, 0)]  # weights/toy/MODEL_CARD.md
    assert sorted(layouts.attn2_sites("toy")) == sorted(toy_sites) and bw.layout_of(toy_sites) == "toy"
    assert bw.block_names(toy_sites) == [
        "all",
        "input",
        "middle",
        "output",
        "input 3",
        "middle 0",
        "output 2",
        "output 3",
    ]
    assert bw.layout_of(EXPECTED_SITES["sdxl"]) == "sdxl" and bw.layout_of(EXPECTED_SITES["sd15"]) == "sd15"
    names = bw.block_names(EXPECTED_SITES["sdxl"])
    assert names[4:] == ["input 4", "input 5", "input 7", "input 8", "middle 0"] + [f"output {i}" for i in range(6)]
    with pytest.raises(pack.adapter.IQAAdapterError, match=r"unknown block 'output 7' for the toy model"):
        bw.site_weights({"output 7": 1.0}, toy_sites)
    # a block beats its group, a group beats all, whatever the order written
    assert bw.site_weights(bw.parse_block_weights("output 2: 0.25\nall: 0; output: 2"), toy_sites) == (
        0.0,
        0.25,
        2.0,
        0.0,
    )
