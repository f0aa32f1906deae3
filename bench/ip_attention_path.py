"""Benchmark: which attention path for the quality term (queries over 2-4 keys).

Compares the host's optimized_attention (what the pack uses) with a hand-fused path for very few keys
(einsum scores, softmax over the keys, einsum with V) at real SDXL/SD1.5 layer shapes, same run, CPU.

    .venv/bin/python bench/ip_attention_path.py
"""

from __future__ import annotations

import os

import common


def fused_few_keys(q, k, v, heads):
    b, n, c = q.shape
    d = c // heads
    qh = q.view(b, n, heads, d)
    kh, vh = k.view(b, -1, heads, d), v.view(b, -1, heads, d)
    w = (torch.einsum("bnhd,bkhd->bnhk", qh, kh) * d**-0.5).softmax(-1)
    return torch.einsum("bnhk,bkhd->bnhd", w, vh).reshape(b, n, c)


def main() -> None:
    common.start_host()
    global torch
    import torch
    from comfy.ldm.modules import attention

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # (label, batch, query tokens, heads, head dim, keys): SDXL 1024 px level-1/2 and SD1.5 512 px level-1
    shapes = [
        ("SDXL 1024px, 640 wide", 2, 4096, 10, 64, 2),
        ("SDXL 1024px, 1280 wide", 2, 1024, 20, 64, 2),
        ("SD1.5 512px, 320 wide", 2, 4096, 8, 40, 2),
        ("SD1.5 512px, 4 tokens", 2, 4096, 8, 40, 4),
    ]
    rows = []
    for label, b, n, h, d, t in shapes:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(b, n, h * d, generator=g)
        k, v = torch.randn(b, t, h * d, generator=g), torch.randn(b, t, h * d, generator=g)
        torch.testing.assert_close(
            fused_few_keys(q, k, v, h), attention.optimized_attention(q, k, v, h), atol=1e-4, rtol=1e-4
        )
        med = common.interleaved_medians(
            {
                "host": lambda: attention.optimized_attention(q, k, v, h),
                "fused": lambda: fused_few_keys(q, k, v, h),
            },
            rounds=15,
        )
        rows.append(
            [label, f"{med['host'] * 1e3:.2f} ms", f"{med['fused'] * 1e3:.2f} ms", f"{med['fused'] / med['host']:.3f}"]
        )
    common.print_table(
        f"Quality term attention, host optimized_attention ({attention.optimized_attention.__name__}) vs fused few-key path "
        f"(CPU, {torch.get_num_threads()} threads)",
        ["shape", "host", "fused", "fused / host"],
        rows,
    )


if __name__ == "__main__":
    main()
