"""Benchmark: one adapter training step on real-size UNets, with and without gradient checkpointing.

Real-size SDXL and SD1.5 UNets (host classes, random weights), batch 1, the step `python -m training train`
makes: adapter forward -> eps_loss through the frozen UNet with the pack's DecoupledCrossAttention on every
attn2 layer -> backward -> AdamW step (random text context of the model's width, and for SDXL a random ADM
vector `y`; no VAE or text encoder, which run without gradients and are not what checkpointing changes).
Each variant runs in a process of its own, so peak memory is that variant's: the plain inference forward
of the same UNet at the same size without gradients (the baseline), the training step, the training step
with training/common/gradient_checkpointing.py. Figures are ratios to the
baseline measured in the same run (median step time after a warm-up step; peak process RSS on the CPU,
peak allocated device memory on a GPU).
It also checks that checkpointing leaves the adapter's gradients as they were: a recomputation that read
another layer's patch (the trap training/common/gradient_checkpointing.py documents) would change them by O(1). Exit
status 1 when a variant fails or the gradients differ, after the tables.

    .venv/bin/python bench/train_step.py [--configs sd15:32 sdxl:32] [--steps 3] [--dtype float32]
    python bench/train_step.py --device cuda --dtype bfloat16 --configs sdxl:128   # GPU: SDXL at 1024 px
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

VARIANTS = ("inference", "train", "train+checkpointing")
CHECKPOINTED = VARIANTS[2:]
RESULT = "RESULT "  # the line a worker prints its figures on
# Metrics in the adapter's input (use_flag on, no positional encoding): the official two-metric recipe.
NUM_METRICS, USE_FLAG, POS_L, PROJ, TOKENS = 2, True, 0, "linear", 2


def grad_tolerance(dtype: str, device: str) -> float:
    """Largest norm-relative gradient difference per tensor that checkpointing may cause.

    The recomputation runs the same kernels on the same inputs, so on the CPU the difference comes only from
    the order in which autograd sums the layers' contributions to the shared projection: float32 rounding,
    ~1e-7 per add, over at most a few hundred adds. A GPU's attention backward may also sum in another order
    (atomics), with the UNet's activations in half precision: rounding at that precision (bf16 eps 7.8e-3,
    averaged over a tensor's many elements). The trap gives differences of order 1 (whole layers' gradients
    from the wrong patch or none)."""
    if device == "cpu" and dtype == "float32":
        return 1e-4
    return 2e-2


def current_memory_bytes(device: str) -> int:
    """Memory in use now (RSS after returning freed heap to the OS, or allocated device memory)."""
    import ctypes
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        return int(torch.cuda.memory_allocated())
    import psutil

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process(os.getpid()).memory_info().rss


def peak_memory_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(args: argparse.Namespace) -> None:
    """One variant in this process: build the UNet, warm up, time args.steps steps, print RESULT {json}."""
    sys.path.insert(0, str(common.REPO))
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    from adapter.encoding import encode_quality_vector, encoded_dim
    from adapter.layers import find_attn2_layers
    from adapter.live_tokens import LiveQualityTokens
    from training.common.autograd_safety import make_autograd_safe
    from training.common.draws import sample_draws
    from training.common.gradient_checkpointing import enable_gradient_checkpointing
    from training.iqa_adapter.diffusion_loss import adapter_patches, eps_loss
    from training.iqa_adapter.trainable import TrainableAdapter

    kind, latent, dev = args.kind, args.latent, torch.device(args.device)
    t0 = time.perf_counter()
    patcher = common.real_size_model(kind, args.device, args.dtype)
    build_s = time.perf_counter() - t0
    unet = patcher.model.diffusion_model.requires_grad_(False).eval()
    ms = patcher.model.model_sampling
    dtype = getattr(torch, args.dtype)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    num_timesteps = int(ms.sigmas.shape[0])
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, latent, latent, generator=g).to(dev)
    context = torch.randn(1, 77, common.CONFIGS[kind]["context_dim"], generator=g).to(dev)
    y = torch.randn(1, common.CONFIGS[kind]["adm_in_channels"], generator=g).to(dev) if kind == "sdxl" else None
    vectors = encode_quality_vector(torch.tensor([[0.7, -0.4]]), USE_FLAG, POS_L).to(dev)

    def draws(i: int):
        return sample_draws(0, [i], (4, latent, latent), num_timesteps)

    out: dict = dict(
        kind=kind,
        latent=latent,
        variant=args.variant,
        weights_bytes=weights,
        build_s=build_s,
        built_bytes=current_memory_bytes(args.device),
    )
    if args.variant == "inference":

        def step(i: int) -> None:
            # the same input eps_loss builds, through the UNet without patches and without gradients
            d = draws(i)
            sigma = ms.sigmas.to(dev)[d.timesteps.to(dev)].float()
            x = latents + d.noise.to(dev) * sigma.view(-1, 1, 1, 1)
            xc = ms.calculate_input(sigma, x).to(dtype)
            opts = {"cond_or_uncond": [0], "sigmas": sigma}
            kw = {} if y is None else {"y": y.to(dtype)}
            with torch.no_grad():
                unet(xc, ms.timestep(sigma).float(), context=context.to(dtype), transformer_options=opts, **kw)
    else:
        layers = find_attn2_layers(unet)
        torch.manual_seed(0)  # the projection starts at torch's default initialisation: the same in every variant
        sites = [s for s, _ in layers]
        adapter = TrainableAdapter.from_base(layers, PROJ, TOKENS, encoded_dim(NUM_METRICS, USE_FLAG, POS_L)).to(dev)
        out["adapter_params"] = adapter.num_trainable()
        out["attn2_layers"] = len(sites)
        make_autograd_safe(unet)
        if args.variant == "train+checkpointing":
            out["checkpointed_blocks"] = enable_gradient_checkpointing(unet)
        from comfy.ldm.modules.attention import optimized_attention

        optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5, weight_decay=1e-2)
        live = LiveQualityTokens()
        patches = adapter_patches(sites, live, optimized_attention)

        def step(i: int) -> None:
            loss = eps_loss(unet, ms, dtype, adapter, live, patches, vectors, latents, context, y, draws(i))
            loss.backward()
            if i == 0 and args.grads:  # the first step's gradients: same weights and draws in every variant
                torch.save({k: p.grad.detach().float().cpu() for k, p in adapter.named_parameters()}, args.grads)
                out["loss0"] = float(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            live.set(None)  # the graph of this step's K/V is not kept alive into the next

    times, cpu_times = [], []
    for i in range(args.steps + 1):  # step 0 is the warm-up
        sync()
        t, c = time.perf_counter(), time.process_time()
        step(i)
        sync()
        if i:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    out.update(
        times=times,
        median_s=statistics.median(times),
        cpu_times=cpu_times,
        median_cpu_s=statistics.median(cpu_times),
        peak_bytes=peak_memory_bytes(args.device),
        threads=torch.get_num_threads(),
        card=torch.cuda.get_device_name() if cuda else "cpu",
    )
    print(RESULT + json.dumps(out), flush=True)


def run_variant(kind: str, latent: int, variant: str, args: argparse.Namespace, grads: str) -> dict:
    """The variant's figures from its own process, or {"error": ...} with the reason it failed."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--kind",
        kind,
        "--latent",
        str(latent),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--grads",
        grads,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or [
            f"no output (exit {proc.returncode}; -9: killed, e.g. out of memory)"
        ]
        print(
            f"{kind} {latent}x{latent} {variant} FAILED (exit {proc.returncode}):\n"
            + "\n".join(proc.stderr.splitlines()[-12:]),
            flush=True,
        )
        return {"error": err[0][:120]}
    res = json.loads(lines[-1][len(RESULT) :])
    print(
        f"{kind} {latent}x{latent} {variant}: {res['median_s']:.3f} s median of {[round(t, 3) for t in res['times']]}, "
        f"CPU time {[round(t, 3) for t in res['cpu_times']]}, "
        f"peak {res['peak_bytes'] / 2**30:.2f} GiB, UNet build {res['build_s']:.0f} s",
        flush=True,
    )
    return res


def grad_difference(a_path: str, b_path: str) -> tuple[float, float]:
    """(max over tensors of |a-b|_2 / |a|_2, max over tensors of max|a-b| / max|a|) between two saved sets."""
    import torch

    a, b = torch.load(a_path), torch.load(b_path)
    if a.keys() != b.keys():
        raise SystemExit("the two runs saved different adapter parameters")
    norm_rel = max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-30)) for k in a)
    max_rel = max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)) for k in a)
    return norm_rel, max_rel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["sd15:32", "sdxl:32"], help="kind:latent (latent = image px / 8)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant, after one warm-up step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="of the frozen UNet; the adapter trains in float32")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--latent", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grads", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.variant = args.worker
        return worker(args)

    tmp = Path(tempfile.mkdtemp(prefix="iqa-bench-grads-"))
    rows, mem_rows, grad_rows, failures, threads, card = [], [], [], [], None, None
    for text in args.configs:
        kind, latent = text.split(":")
        latent = int(latent)
        path = {v: str(tmp / f"{kind}_{latent}_{v.replace(' ', '_').replace(',', '')}.pt") for v in args.variants}
        res = {v: run_variant(kind, latent, v, args, path[v]) for v in args.variants}
        ok = {v: r for v, r in res.items() if "error" not in r}
        failures += [f"{kind} latent {latent} {v} failed: {r['error']}" for v, r in res.items() if "error" in r]
        threads = threads or next((r["threads"] for r in ok.values()), None)
        card = card or next((r["card"] for r in ok.values()), None)
        base = ok.get("inference")
        image = f"{latent * 8}px ({latent}x{latent})"
        for v in CHECKPOINTED:
            if v in ok and "train" in ok:
                norm_rel, max_rel = grad_difference(path["train"], path[v])
                tol = grad_tolerance(args.dtype, args.device)
                grad_rows.append([kind, image, v, f"{norm_rel:.2e}", f"{max_rel:.2e}", f"{tol:g}"])
                print(
                    f"{kind} {image} {v}: adapter gradients differ from the unchecked step's by {norm_rel:.2e} "
                    f"(norm-relative, worst tensor; max elementwise / max {max_rel:.2e}; bound {tol:g})",
                    flush=True,
                )
                if not norm_rel <= tol:
                    failures.append(
                        f"{kind} {image} {v}: the adapter gradients differ from those without checkpointing by "
                        f"{norm_rel:.3e} (norm-relative), over the bound {tol:g}: the recomputation is not the forward."
                    )
        for p in path.values():
            if os.path.exists(p):
                os.unlink(p)

        def t_cell(v: str) -> str:
            if v not in res:
                return "not run"
            if "error" in res[v]:
                return f"fails: {res[v]['error']}"
            r = res[v]
            if not base:
                return f"{r['median_s']:.2f} s"
            cell = f"{r['median_s']:.2f} s ({r['median_s'] / base['median_s']:.2f})"
            if args.device == "cpu":  # process CPU time: less sensitive than wall time to other jobs on the cores
                cell += f"; CPU {r['median_cpu_s']:.2f} s ({r['median_cpu_s'] / base['median_cpu_s']:.2f})"
            return cell

        def m_cell(v: str) -> str:
            if v not in res:
                return "not run"
            if "error" in res[v]:
                return "fails"
            r = res[v]
            above = f"+{(r['peak_bytes'] - r['built_bytes']) / 2**30:.2f} over the built UNet"
            ratio = f"{r['peak_bytes'] / base['peak_bytes']:.2f}; " if base else ""
            return f"{r['peak_bytes'] / 2**30:.2f} ({ratio}{above})"

        train = next((ok[v] for v in VARIANTS[1:] if v in ok), {})
        weights = (base or train).get("weights_bytes", 0)
        rows.append([kind, image, args.dtype, t_cell("inference")] + [t_cell(v) for v in VARIANTS[1:]])
        mem_rows.append(
            [
                kind,
                image,
                f"{weights / 2**30:.2f}",
                f"{train['adapter_params'] / 1e6:.0f} M in {train['attn2_layers']} layers" if train else "n/a",
                m_cell("inference"),
            ]
            + [m_cell(v) for v in VARIANTS[1:]]
        )

    where = f"{args.device}, {threads} threads" if args.device == "cpu" else f"{args.device}, {card}"
    common.print_table(
        "Step time: wall seconds (ratio to the inference forward)"
        + ("; CPU: the process's CPU seconds (ratio)" if args.device == "cpu" else "")
        + f" ({where}, batch 1, frozen UNet "
        f"{args.dtype}, adapter float32, AdamW; median of {args.steps} steps after a warm-up, each variant "
        "its own process)",
        ["UNet", "image", "UNet dtype", "inference forward (baseline)", "train step", "train step, checkpointing"],
        rows,
    )
    common.print_table(
        "Peak memory, GiB (ratio to the inference forward's; above the memory in use once the UNet was built), "
        + ("peak process RSS" if args.device == "cpu" else "torch.cuda.max_memory_allocated"),
        [
            "UNet",
            "image",
            "UNet weights",
            "adapter (trainable)",
            "inference forward",
            "train step",
            "train step, checkpointing",
        ],
        mem_rows,
    )
    if grad_rows:
        common.print_table(
            "Adapter gradients of the first step, checkpointed vs not (worst tensor)",
            ["UNet", "image", "variant", "norm-relative difference", "max elementwise / max", "bound"],
            grad_rows,
        )
    if failures:  # after the tables, so the figures that were measured are not lost
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
