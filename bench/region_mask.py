"""Benchmark: what a region mask adds to one patched cross-attention call, at real layer shapes.

The whole-step figure (bench/quality_condition.py, "soft half mask") sits inside a CPU noise floor of a
percent or two; this isolates the one place a mask changes, the pack's attn2 patch (text attention over 77
keys plus the quality term), with and without a soft mask, steps interleaved round by round in one run.
A UNet step also runs convolutions, self-attention and feed-forwards, so the step ratio is closer to 1
than the call ratio here.

    .venv/bin/python bench/region_mask.py
"""

from __future__ import annotations

import os

import common


def main() -> None:
    pack = common.start_host()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    A = pack.adapter
    # (label, latent side, query tokens at this level, heads, head dim): SDXL 1024 px and SD1.5 512 px; the
    # patch gets the text K/V already projected to the layer's width, 77 tokens
    shapes = [
        ("SDXL 1024px, level 1 (640 wide)", 128, 4096, 10, 64),
        ("SDXL 1024px, level 2 (1280 wide)", 128, 1024, 20, 64),
        ("SD1.5 512px, level 0 (320 wide)", 64, 4096, 8, 40),
        ("SD1.5 512px, level 2 (1280 wide)", 64, 256, 8, 160),
    ]
    rows = []
    for label, side, n, h, d in shapes:
        g = torch.Generator().manual_seed(0)
        c = h * d
        kv = A.model.LayerKV((torch.randn(1, 2, c, generator=g),), (torch.randn(1, 2, c, generator=g),))
        soft = torch.full((1, side * 8, side * 8), 0.3)
        soft[:, :, : side * 4] = 1.0
        plain_tokens = A.QualityTokens(kv, kv, 1.0)
        masked_tokens = A.QualityTokens(kv, kv, 1.0, mask=A.RegionMask.from_host(soft))
        plain = A.DecoupledCrossAttention(((plain_tokens, 0),), pack.nodes.host.host_attention)
        masked = A.DecoupledCrossAttention(((masked_tokens, 0),), pack.nodes.host.host_attention)
        q = torch.randn(2, n, c, generator=g)
        k, v = torch.randn(2, 77, c, generator=g), torch.randn(2, 77, c, generator=g)
        opts = {"n_heads": h, "cond_or_uncond": [1, 0], "original_shape": [2, 4, side, side]}
        with torch.inference_mode():
            masked(q, k, v, opts)  # the resized mask is cached on the first call, as in sampling
            med = common.interleaved_medians(
                {"plain": lambda: plain(q, k, v, opts), "masked": lambda: masked(q, k, v, opts)}, rounds=15
            )
        rows.append(
            [
                label,
                f"{med['plain'] * 1e3:.2f} ms",
                f"{med['masked'] * 1e3:.2f} ms",
                f"{med['masked'] / med['plain']:.4f}",
            ]
        )
    common.print_table(
        f"One patched attn2 call (text attention + quality term), no mask vs a soft mask (CPU, "
        f"{torch.get_num_threads()} threads, median of 15 interleaved rounds)",
        ["layer", "no mask", "soft mask", "mask / no mask"],
        rows,
    )


if __name__ == "__main__":
    main()
