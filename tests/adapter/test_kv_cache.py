"""The per-run K/V cache: same results as computing per call, invalidated by a new condition, shared by clones."""

from __future__ import annotations

import torch
from helpers import EXPECTED_SITES, inputs, pack, run_unet, tiny
from test_quality_condition import attn2_patches, condition, make_adapter  # noqa: F401  (fixture)


def test_cached_kv_equal_per_call_projection(make_adapter):  # noqa: F811  (the imported fixture)
    adapter, sd = make_adapter("sd15")
    patched = condition(tiny.tiny_model("sd15"), adapter, "2.0", "z-score")
    x, ctx = inputs("sd15", 2)
    first = run_unet(patched, x, ctx, cond_or_uncond=(1, 0))
    second = run_unet(patched, x, ctx, cond_or_uncond=(1, 0))  # served from the cache
    assert torch.equal(first, second)
    # Uncached: project the tokens through the checkpoint weights at call time, in the query's dtype.
    key = EXPECTED_SITES["sd15"][4]
    patch = attn2_patches(patched)[key]
    tokens = patch.contributions[0][0]
    wk = sd["ip_adapter.9.to_k_ip.weight"]
    toks = adapter.tokens(pack.adapter.encoding.encode_quality_vector(torch.tensor([[2.0, 2.0]]), True, 0))
    k_cached, _ = tokens.kv(4, (0,), 1, torch.device("cpu"), torch.float32)
    # Tight, and safe: the cache computed the very same matmul on tokens of the same shape (bitwise here).
    torch.testing.assert_close(k_cached, toks @ wk.T, atol=1e-6, rtol=1e-6)


def test_new_target_gives_new_kv(make_adapter):  # noqa: F811  (the imported fixture)
    adapter, _ = make_adapter("sd15")
    model = tiny.tiny_model("sd15")
    x, ctx = inputs("sd15", 1)
    a = run_unet(condition(model, adapter, "10"), x, ctx)
    b = run_unet(condition(model, adapter, "90"), x, ctx)
    c = run_unet(condition(model, adapter, "10"), x, ctx)
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_cache_is_keyed_by_dtype_and_layout(make_adapter):  # noqa: F811  (the imported fixture)
    adapter, _ = make_adapter("sd15")
    patch = attn2_patches(condition(tiny.tiny_model("sd15"), adapter, "1; 99"))[EXPECTED_SITES["sd15"][0]]
    tokens = patch.contributions[0][0]
    k32, _ = tokens.kv(0, (1, 0), 4, torch.device("cpu"), torch.float32)
    k16, _ = tokens.kv(0, (1, 0), 4, torch.device("cpu"), torch.bfloat16)
    k_cond, _ = tokens.kv(0, (0,), 2, torch.device("cpu"), torch.float32)
    assert k16.dtype == torch.bfloat16 and k32.dtype == torch.float32
    assert torch.equal(k32[2:], k_cond) and torch.equal(k32[0], k32[1])  # uncond rows first, broadcast


def test_clones_share_adapter_storage(make_adapter):  # noqa: F811  (the imported fixture)
    adapter, _ = make_adapter("sdxl")
    patched = condition(tiny.tiny_model("sdxl"), adapter)
    clones = [patched.clone() for _ in range(3)]
    holders = {id(attn2_patches(c)[EXPECTED_SITES["sdxl"][5]].contributions[0][0]) for c in clones + [patched]}
    assert len(holders) == 1
    kv = [attn2_patches(c)[EXPECTED_SITES["sdxl"][5]].contributions[0][0].cond.keys[5] for c in clones]
    assert len({t.untyped_storage().data_ptr() for t in kv}) == 1
