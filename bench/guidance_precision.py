"""Benchmark: the guidance gradient in float32, float32 channels_last and bfloat16 (CPU).

The measurement behind IQA Gradient Guidance's `precision` option and the memory format of its copies. It
times the pack's own guidance_gradient (copy decoder and metric, decode, score, gradient w.r.t. x0) with
three builds of the same networks:
  - float32:    the pack's `precision` float32 (what `auto` is on a CPU host);
  - float32 CL: the same copies in channels_last memory format (not adopted; built here by hand);
  - bfloat16:   the pack's `precision` bfloat16 (decoder in bf16, metric under autocast, channels_last).
and reports each time as a ratio to float32, measured in the same run with the variants interleaved, and
the cosine between the variant's gradient and the float32 one (guidance uses only the normalized direction).

    OMP_NUM_THREADS=2 .venv/bin/python bench/guidance_precision.py [--rounds 3] [--configs taesd:512 vae:512]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import common
import gradient_guidance as gg_bench


def channels_last_float32(dc, src, term, vae, metric, latent_format):
    """The pack's float32 decoder and metric term, with copies and inputs in channels_last."""
    import torch

    def to_cl(x):
        return x.contiguous(memory_format=torch.channels_last)

    def build_decoder(device):
        net = dc.materialize(vae.first_stage_model, device=device, drop=dc._ENCODER_NAMES, channels_last=True)
        return lambda x0: ((net.decode(to_cl(latent_format.process_out(x0))).float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def build_term(device):
        net = dc.materialize(metric.net, device=device, channels_last=True)

        def score(images):
            out = net(to_cl(images))
            out = out[0] if isinstance(out, (tuple, list)) else out
            return out.float().reshape(images.shape[0], -1).mean(1)

        return score

    return dataclasses.replace(src, build=build_decoder), dataclasses.replace(term, build=build_term)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--configs", nargs="+", default=["taesd:512", "vae:512"])
    ap.add_argument("--metrics", nargs="+", default=[gg_bench.METRIC])
    args = ap.parse_args()
    os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    wall0, load0 = time.perf_counter(), os.getloadavg()[0]
    pack = common.start_host()
    import comfy.latent_formats
    import torch
    import torch.cpu

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    dc, core = pack.guidance.differentiable_copies, pack.guidance.gradient_guidance
    score_term = pack.nodes.gradient_guidance.score_term
    latent_format = comfy.latent_formats.SD15()
    vaes = gg_bench.random_vaes()
    metrics = {m: gg_bench.random_metric(m) for m in args.metrics}
    cpu = torch.device("cpu")
    x0 = torch.randn(1, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(3))
    flavours = ("float32", "float32 CL", "bfloat16")

    rows = []
    for text in args.configs:
        decoder, cap, _ = gg_bench.parse_config(text)
        for mname in args.metrics:
            cfg = core.GuidanceConfig(max_decode_size=cap)
            grads, variants = {}, {}
            for flavour in flavours:
                precision = "bfloat16" if flavour == "bfloat16" else "float32"
                src = dc.vae_decoder(vaes[decoder], latent_format, precision)
                term = score_term(metrics[mname], 1.0, "maximize", precision)
                if flavour == "float32 CL":
                    src, term = channels_last_float32(dc, src, term, vaes[decoder], metrics[mname], latent_format)

                def run(src=src, term=term, flavour=flavour):
                    with torch.inference_mode():  # as inside a prompt; the hook leaves it the same way
                        with torch.inference_mode(False), torch.enable_grad():
                            grads[flavour] = core.guidance_gradient(
                                x0, src.build(cpu), [term.build(cpu)], [term], cfg, src.upscale_ratio
                            )[0]

                variants[flavour] = run
            med = common.interleaved_medians(variants, args.rounds)
            ref = grads["float32"].flatten()
            row = [gg_bench.label(decoder, cap, mname), f"{med['float32']:.2f} s"]
            for flavour in flavours[1:]:
                cos = float(torch.nn.functional.cosine_similarity(grads[flavour].flatten(), ref, dim=0))
                row.append(f"{med[flavour]:.2f} s (speed-up {med['float32'] / med[flavour]:.2f}x, cos {cos:.4f})")
            rows.append(row)
    amx = torch.cpu._is_amx_tile_supported() if hasattr(torch.cpu, "_is_amx_tile_supported") else "unknown"
    common.print_table(
        f"Guidance gradient (copies + decode + IQA + backward), float32, channels_last and bfloat16 (CPU "
        f"{torch.backends.cpu.get_cpu_capability()}, AMX tiles: {amx}, {torch.get_num_threads()} threads, "
        f"{args.latent}x{args.latent} latent, median of {args.rounds} interleaved rounds)",
        ["decoder @ cap, metric", "float32"] + list(flavours[1:]),
        rows,
    )
    print(
        f"\nwhole run: {time.perf_counter() - wall0:.0f} s; 1-min load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs (other processes share them)"
    )


if __name__ == "__main__":
    main()
