"""Benchmark: cost of Quality Condition per sampling step, memory, and load + patch time.

Real-size SDXL and SD1.5 UNets (host classes, random weights) on this machine's CPU, cfg batch of 2. Every
figure is a ratio against the plain model measured in the same run, steps interleaved round by round.
"Per-call projection" is the straightforward patch most adapter packs use (K/V of the tokens recomputed at
every call), implemented here only as a baseline; "host path" is the pack's cached K/V with the quality term
through the host's attention function and separate scale/add ops (the hot path before bench/gpu.py).
"plain (again)" times the plain model a second time: its ratio is the run's noise floor. "block_weights" is
Quality Condition with a weight other than 1 on every block (BLOCKS), which costs nothing per step by design.
"mask" is Quality Condition with a soft mask (the left half at 1, the rest at 0.3): a resized copy per layer,
cached, and one multiply-add per term instead of an add.

    .venv/bin/python bench/quality_condition.py [--kinds sdxl sd15] [--latents 32 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import common

BLOCKS = "input: 0.5, middle: 0.8, output: 0.7"  # Quality Condition's block_weights in the "block weights" column


def write_random_adapter(path: Path, sites, cross_dim: int, input_dim: int = 3, tokens: int = 2) -> int:
    """An IQA-Adapter checkpoint of real size (fp16), shaped for these attn2 sites."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {
        "image_proj.proj.weight": torch.randn(tokens * cross_dim, input_dim, generator=g) * 0.3,
        "image_proj.proj.bias": torch.zeros(tokens * cross_dim),
        "image_proj.norm.weight": torch.ones(cross_dim),
        "image_proj.norm.bias": torch.zeros(cross_dim),
    }
    for n, s in enumerate(sites):
        for kv in "kv":
            sd[f"ip_adapter.{2 * n + 1}.to_{kv}_ip.weight"] = (
                torch.randn(s.hidden, cross_dim, generator=g) / cross_dim**0.5
            ).half()
    meta = {"iqa_adapter": json.dumps({"metrics": ["topiq_nr", "laion_aes"], "use_flag": True})}
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    return path.stat().st_size


class PerCallProjection:
    """Baseline attn2 patch: projects the quality tokens through to_k_ip/to_v_ip at every call."""

    def __init__(self, tokens_cond, tokens_uncond, wk, wv, attention, device="cpu", dtype=None):
        # weights already on the compute device and in its dtype: only the per-call projection is measured
        tc, tu, wk, wv = (t.to(device, dtype) for t in (tokens_cond, tokens_uncond, wk, wv))
        self.tc, self.tu, self.wk, self.wv, self.attention = tc, tu, wk, wv, attention

    def __call__(self, q, k, v, extra):
        import torch

        heads = extra["n_heads"]
        per = q.shape[0] // len(extra["cond_or_uncond"])
        toks = torch.cat([(self.tu if c == 1 else self.tc).expand(per, -1, -1) for c in extra["cond_or_uncond"]]).to(
            q.dtype
        )
        out = self.attention(q, k, v, heads)
        return out + self.attention(q, toks @ self.wk.to(q.dtype).T, toks @ self.wv.to(q.dtype).T, heads)


class HostAttentionTerm:
    """Baseline attn2 patch: the pack's cached K/V, but the quality term through the host's attention
    function, then scaled and added as separate ops (the pack's hot path before it was tuned on a GPU)."""

    def __init__(self, contributions, attention):
        self.contributions, self.attention = contributions, attention

    def __call__(self, q, k, v, extra):
        heads = extra["n_heads"]
        out = self.attention(q, k, v, heads)
        layout = tuple(extra.get("cond_or_uncond") or (0,))
        for tokens, layer in self.contributions:
            k_ip, v_ip = tokens.kv(layer, layout, q.shape[0], q.device, q.dtype)
            out = out + tokens.scale * self.attention(q, k_ip, v_ip, heads)
        return out


def rss() -> int:
    """Resident memory after returning freed heap to the OS, so allocator slack does not count."""
    import ctypes

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process(os.getpid()).memory_info().rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", nargs="+", default=["sdxl", "sd15"])
    ap.add_argument("--latents", nargs="*", type=int, default=[32, 64], help="none: memory and loading only")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pack = common.start_host()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    A, host = pack.adapter, pack.nodes.host
    QC = pack.nodes.quality_condition.QualityCondition
    step_rows, mem_rows = [], []
    for kind in args.kinds:
        t0 = time.perf_counter()
        model = common.real_size_model(kind)
        build_s = time.perf_counter() - t0
        sites = A.patching.model_sites(model)
        cross = sites[0].context_dim
        path = Path(tempfile.mkdtemp()) / f"{kind}_adapter.safetensors"
        size = write_random_adapter(path, sites, cross)
        model_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
        base_rss = rss()

        load_times = []
        for _ in range(
            3
        ):  # the first may read the file back from disk: the UNet's build can evict it from the page cache
            t0 = time.perf_counter()
            adapter = A.IQAAdapter.load(path)
            patched = QC().apply(model, adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
            load_times.append(time.perf_counter() - t0)
        load_patch_s = statistics.median(load_times)
        clones = [
            QC().apply(model.clone(), adapter, t, "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
            for t in ("25", "50", "75", "90")
        ]
        mem_ratio = rss() / base_rss
        mem_rows.append(
            [
                kind,
                f"{size / 2**20:.0f} MiB",
                f"{model_bytes / 2**30:.2f} GiB",
                f"{load_patch_s:.2f} s ({', '.join(f'{t:.2f}' for t in load_times)})",
                f"{mem_ratio:.4f}",
                f"{1 + size / model_bytes + 0.02:.4f}",
                f"{build_s:.0f} s",
            ]
        )
        stacked = QC().apply(patched, adapter, "50", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
        # every layer still patched, each at a weight other than 1: the worst case (weight 0 leaves a layer out)
        blocks = QC().apply(model, adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5, block_weights=BLOCKS)[0]

        naive = model.clone()
        enc = A.encoding.encode_quality_vector(torch.tensor([[2.0, 2.0]]), True, 0)
        tc, tu = adapter.tokens(enc), adapter.tokens(torch.zeros(1, 3))
        for n, s in enumerate(sites):
            wk, wv = adapter._ip[n]
            naive.set_model_attn2_replace(PerCallProjection(tc, tu, wk, wv, host.host_attention), *s.key)
        host_path = model.clone()
        for key, patch in patched.model_options["transformer_options"]["patches_replace"]["attn2"].items():
            host_path.set_model_attn2_replace(HostAttentionTerm(patch.contributions, host.host_attention), *key)
        for latent in args.latents:
            soft = torch.full((1, latent * 8, latent * 8), 0.3)
            soft[:, :, : latent * 4] = 1.0
            masked = QC().apply(model, adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5, mask=soft)[0]
            med = common.interleaved_medians(
                {
                    "plain": common.unet_step(model, kind, latent),
                    "quality": common.unet_step(patched, kind, latent),
                    "plain (again)": common.unet_step(model, kind, latent),
                    "stacked": common.unet_step(stacked, kind, latent),
                    "blocks": common.unet_step(blocks, kind, latent),
                    "mask": common.unet_step(masked, kind, latent),
                    "host path": common.unet_step(host_path, kind, latent),
                    "per_call": common.unet_step(naive, kind, latent),
                },
                args.rounds,
            )
            p = med["plain"]
            step_rows.append(
                [
                    kind,
                    f"{latent}x{latent}",
                    f"{p:.2f} s",
                    f"{med['plain (again)'] / p:.4f}",
                    f"{med['quality'] / p:.4f}",
                    f"{med['stacked'] / p:.4f}",
                    f"{med['blocks'] / p:.4f}",
                    f"{med['mask'] / p:.4f}",
                    f"{med['host path'] / p:.4f}",
                    f"{med['per_call'] / p:.4f}",
                ]
            )
            print(step_rows[-1], flush=True)
            del masked
        del model, patched, stacked, blocks, naive, clones, adapter, host_path
        gc.collect()
    threads = torch.get_num_threads()
    common.print_table(
        f"Step time, ratio to the plain model (CPU, {threads} threads, cfg batch 2, median of {args.rounds} interleaved rounds)",
        [
            "UNet",
            "latent",
            "plain step",
            "plain (again): noise floor",
            "Quality Condition",
            "two stacked",
            f"block_weights '{BLOCKS}'",
            "soft half mask",
            "cached K/V, host attention + scale + add",
            "per-call projection (baseline)",
        ],
        step_rows,
    )
    common.print_table(
        "Memory and loading (goal: memory ratio <= bound; load + patch < 1.5 s for a 0.7 GB adapter)",
        [
            "UNet",
            "adapter file",
            "UNet weights",
            "load + patch, median (3 tries)",
            "RSS ratio, 4 clones / none",
            "bound",
            "UNet build",
        ],
        mem_rows,
    )


if __name__ == "__main__":
    main()
