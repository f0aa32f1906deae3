"""Benchmark on a CUDA card: Quality Condition overhead and IQA Gradient Guidance cost, SDXL at 1024 px.

Written for the project's lent GPU machine (`device` tool), which has torch but not the host's server
dependencies: the host's model classes are imported directly (comfy.model_base, comfy.sd, comfy.samplers)
and the pack is imported as a package, without the server's node loader. Real-size UNets (host classes,
random weights) in float16 as the host runs SDXL/SD1.5 on such a card, cfg batch of 2. Every figure is a
ratio to a baseline measured in the same run, variants interleaved round by round, timed with CUDA events
(median). "plain (again)" is the plain model timed as a separate variant: its ratio is the noise floor.

    python bench/gpu.py [--rounds 30] [--sections qc guide] [--out DIR]
    python bench/gpu.py --device cpu --qc-configs sd15:8 --guide-latent 8 --rounds 1   # dry run, no GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import common

RESULTS: dict = {}


def tolerate_new_transformers() -> None:
    """Let comfy.sd import under transformers 5 (the GPU image's), which dropped names that the host's
    text-encoder modules import (SpecialTokensMixin, ...). The benchmark never tokenizes, so stand-in
    classes for the missing names are enough."""
    import re

    import transformers

    for _ in range(20):
        try:
            import comfy.sd  # noqa: F401

            return
        except ImportError as e:
            m = re.search(r"cannot import name '(\w+)' from 'transformers", str(e))
            if not m:
                raise
            print(f"(transformers {transformers.__version__} lacks {m.group(1)}; a stand-in is used)", flush=True)
            setattr(transformers, m.group(1), type(m.group(1), (), {}))


def import_pack():
    """The pack as a package named like the host would name it, without the host's server."""
    import importlib

    root = Path(tempfile.mkdtemp(prefix="iqa-pack-"))
    os.symlink(common.REPO, root / common.PACK_NAME)
    sys.path.insert(0, str(root))
    return importlib.import_module(common.PACK_NAME)


class Timer:
    """Seconds of one call: CUDA events on a GPU (no host sync inside the region), perf_counter on the CPU."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], None]) -> float:
        import torch

        if not self.cuda:
            return common.wall_seconds(fn)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1000.0


def ops_and_launch(fn: Callable[[], None]) -> tuple[int, float]:
    """(GPU operations one call enqueues, host seconds to enqueue them): when the host needs about as long to
    enqueue a step as the GPU needs to run it, the step is bound by launches, and every extra op counts."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    launch = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        launch.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    ops = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return ops, statistics.median(launch)


def section_qc(pack, args, timer: Timer) -> None:
    """Quality Condition step / plain step, two stacked, per-call projection; device memory with 4 clones."""
    import quality_condition as qcb
    import torch

    A, host = pack.adapter, pack.nodes.host
    QC = pack.nodes.quality_condition.QualityCondition
    dev = torch.device(args.device)
    rows, mem_rows = [], []
    by_kind: dict[str, list[int]] = {}
    for text in args.qc_configs:
        kind, latent = text.split(":")
        by_kind.setdefault(kind, []).append(int(latent))
    for kind, latents in by_kind.items():
        model = common.real_size_model(kind, args.device, args.dtype)
        sites = A.patching.model_sites(model)
        path = Path(tempfile.mkdtemp()) / f"{kind}_adapter.safetensors"
        size = qcb.write_random_adapter(path, sites, sites[0].context_dim)
        model_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
        t0 = time.perf_counter()
        adapter = A.IQAAdapter.load(path)
        patched = QC().apply(model, adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
        load_patch_s = time.perf_counter() - t0
        stacked = QC().apply(patched, adapter, "50", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
        windowed = QC().apply(model, adapter, "99", "percentile", 1.0, 0.1, 0.9, "zeros", 0.5)[0]  # per-item sigma mask
        naive = model.clone()
        enc = A.encoding.encode_quality_vector(torch.tensor([[2.0, 2.0]]), True, 0)
        tc, tu = adapter.tokens(enc), adapter.tokens(torch.zeros(1, 3))
        dtype = getattr(torch, args.dtype)
        for n, s in enumerate(sites):
            wk, wv = adapter._ip[n]
            naive.set_model_attn2_replace(
                qcb.PerCallProjection(tc, tu, wk, wv, host.host_attention, dev, dtype), *s.key
            )
        host_path = model.clone()
        for key, patch in patched.model_options["transformer_options"]["patches_replace"]["attn2"].items():
            host_path.set_model_attn2_replace(qcb.HostAttentionTerm(patch.contributions, host.host_attention), *key)
        for latent in latents:
            med = common.interleaved_medians(
                {
                    "plain": common.unet_step(model, kind, latent),
                    "quality": common.unet_step(patched, kind, latent),
                    "plain (again)": common.unet_step(model, kind, latent),
                    "host path": common.unet_step(host_path, kind, latent),
                    "stacked": common.unet_step(stacked, kind, latent),
                    "windowed": common.unet_step(windowed, kind, latent),
                    "per_call": common.unet_step(naive, kind, latent),
                },
                args.rounds,
                timer,
                warmup=3,
            )
            p = med["plain"]
            row = [
                kind,
                f"{latent * 8}px ({latent}x{latent})",
                f"{p * 1000:.1f} ms",
                f"{med['plain (again)'] / p:.4f}",
                f"{med['quality'] / p:.4f}",
                f"{med['windowed'] / p:.4f}",
                f"{med['stacked'] / p:.4f}",
                f"{med['host path'] / p:.4f}",
                f"{med['per_call'] / p:.4f}",
            ]
            if dev.type == "cuda":
                try:
                    (ops_p, launch_p), (ops_q, _) = (
                        ops_and_launch(common.unet_step(m, kind, latent)) for m in (model, patched)
                    )
                    row += [f"{ops_p} -> {ops_q} (+{ops_q - ops_p}, {len(sites)} attn2 layers)", f"{launch_p / p:.2f}"]
                except Exception as e:  # the profiler is a diagnosis; its failure must not lose the timings
                    row += [f"n/a ({type(e).__name__}: {e})", ""]
            rows.append(row)
            RESULTS.setdefault("qc", []).append(
                dict(kind=kind, latent=latent, ms={k: v * 1000 for k, v in med.items()})
            )
            print("qc", row, flush=True)
        # device memory: 4 conditioned clones, each run once (K/V are cast to the device lazily, at first use)
        if dev.type == "cuda":
            gc.collect()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            clones = [
                QC().apply(model.clone(), adapter, t, "percentile", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
                for t in ("25", "50", "75", "90")
            ]
            for clone in clones:
                common.unet_step(clone, kind, latents[0])()
            torch.cuda.synchronize()
            grown = torch.cuda.memory_allocated() - base
            mem_rows.append(
                [
                    kind,
                    f"{size / 2**20:.0f} MiB",
                    f"{model_bytes / 2**30:.2f} GiB",
                    f"{load_patch_s:.2f} s",
                    f"{grown / 2**20:.2f} MiB",
                    f"{(model_bytes + grown) / model_bytes:.5f}",
                    f"{1 + size / model_bytes + 0.02:.4f}",
                ]
            )
            print("mem", mem_rows[-1], flush=True)
            del clones, clone  # the loop variable would keep the last clone (and its UNet) alive
        del model, patched, stacked, windowed, naive, adapter, host_path
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    common.print_table(
        f"Quality Condition, step time ratio to the plain model ({args.device}, {args.dtype}, cfg batch 2, "
        f"median of {args.rounds} interleaved rounds)",
        [
            "UNet",
            "image",
            "plain step",
            "plain (again)",
            "Quality Condition",
            "with sigma window",
            "two stacked",
            "cached K/V, host attention + scale + add",
            "per-call projection",
        ]
        + (
            ["GPU ops per step, plain -> Quality Condition", "host enqueue time / GPU time, plain"]
            if dev.type == "cuda"
            else []
        ),
        rows,
    )
    if mem_rows:
        common.print_table(
            "Device memory: 4 conditioned clones after one step each, vs the plain model's weights",
            ["UNet", "adapter file", "UNet weights", "load + patch", "device memory added", "ratio", "bound"],
            mem_rows,
        )


def section_guide(pack, args, timer: Timer) -> None:
    """Guided step / unguided step and where the time goes, SDXL at 1024 px (latent 128)."""
    import gradient_guidance as ggb
    import torch

    class SyncClock(ggb.Clock):
        def mark(self, name: str) -> None:
            if torch.cuda.is_available() and args.device != "cpu":
                torch.cuda.synchronize()
            super().mark(name)

    tolerate_new_transformers()
    kind, latent = "sdxl", args.guide_latent
    model = common.real_size_model(kind, args.device, args.dtype)
    vaes = ggb.random_vaes()
    metric = ggb.random_metric(ggb.METRIC)
    metric.net.to(args.device)  # Load IQA Model puts the metric on the compute device
    variants = {"unguided": common.sampler_call(model, kind, latent)}
    records = {}
    for text in args.guide_configs:
        decoder, cap, precision = ggb.parse_config(text)
        name = f"{ggb.DECODER_NAMES[decoder]} @{cap or 'full'}, {precision}"
        patched = ggb.guided_model(pack, model, metric, vaes[decoder], cap, precision)
        variants[name], records[name] = ggb.clocked(
            patched, SyncClock(), lambda p: common.sampler_call(p, kind, latent)
        )
    peaks = {}
    if args.device != "cpu":
        for name, fn in variants.items():  # peak device memory of one call each
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            peaks[name] = (torch.cuda.max_memory_allocated() - before) / 2**30
    med = common.interleaved_medians(variants, max(3, args.rounds // 3), timer)
    base = med["unguided"]
    parts = {
        k: {p: statistics.median(r[p][0] for r in rec[-max(3, args.rounds // 3) :]) for p in ggb.Clock.PARTS}
        for k, rec in records.items()
    }
    steps = 20
    rows = []
    for k, v in med.items():
        first_copies = (
            records[k][0]["copies"][0] if k in records else 0.0
        )  # copies are made at a run's first guided step
        row = [
            k,
            f"{v * 1000:.0f} ms",
            f"{v / base:.2f}",
            f"{(steps * v + first_copies) / (steps * base):.2f}",
            f"{peaks.get(k, float('nan')):.2f} GiB",
            f"{first_copies * 1000:.0f}",
        ]
        row += (
            [f"{parts[k][p] * 1000:.0f}" for p in ggb.Clock.PARTS if p != "copies"]
            if k in parts
            else [""] * (len(ggb.Clock.PARTS) - 1)
        )
        rows.append(row)
    RESULTS["guide"] = dict(
        ms={k: v * 1000 for k, v in med.items()},
        first_copies_ms={k: r[0]["copies"][0] * 1000 for k, r in records.items()},
        parts_ms={k: {p: v * 1000 for p, v in d.items()} for k, d in parts.items()},
        peak_gib=peaks,
    )
    vae_dtype = getattr(vaes["vae"], "vae_dtype", None)
    common.print_table(
        f"IQA Gradient Guidance, {kind} {latent * 8}px, topiq_nr, scale {ggb.SCALE}; guided step / unguided "
        f"({args.device}, UNet {args.dtype}, host VAE dtype {vae_dtype}; parts in ms, synchronized clock)",
        ["variant", "step", "ratio", f"{steps}-step run ratio", "peak extra device memory", "copies (once per run)"]
        + [p for p in ggb.Clock.PARTS if p != "copies"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sections", nargs="+", default=["qc", "guide"])
    ap.add_argument("--qc-configs", nargs="+", default=["sdxl:128", "sdxl:64", "sd15:64", "sd15:96"])
    ap.add_argument("--guide-latent", type=int, default=128)
    ap.add_argument(
        "--guide-configs",
        nargs="+",
        default=["taesd:512", "taesd:1024", "vae:512", "vae:512:bfloat16", "vae:512:float32", "vae:1024", "vae:0"],
        help="decoder:cap[:precision]",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", ""))
    args = ap.parse_args()
    os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    t0 = time.perf_counter()
    pack = import_pack()
    import torch

    if args.device != "cpu":
        print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    RESULTS["env"] = dict(
        torch=torch.__version__, device=torch.cuda.get_device_name() if args.device != "cpu" else "cpu"
    )
    timer = Timer(args.device)
    for name, fn in (("qc", section_qc), ("guide", section_guide)):
        if name in args.sections:
            try:
                fn(pack, args, timer)
            except Exception:  # one section failing must not lose the other's figures
                traceback.print_exc()
                RESULTS[f"{name}_error"] = traceback.format_exc()
    print(f"\nwhole run: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.out:
        Path(args.out, "gpu_bench.json").write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
