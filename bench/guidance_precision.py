"""Benchmark helper: what the guidance gradient would cost with channels_last and bf16 copies (CPU).

The measurement behind IQA Gradient Guidance's `precision` option and the memory format of its copies
(`auto`: the VAE's dtype, float32 on a CPU host, default memory format). This times the pack's own guidance_gradient (copy
decoder and metric, decode, score, gradient w.r.t. x0) with three builds of the same networks:
  - shipped:   the pack's vae_decoder and pyiqa term as they are;
  - fp32 CL:   the same copies in channels_last memory format;
  - bf16 CL:   decoder copy in bfloat16 and metric under CPU autocast to bfloat16, both channels_last.
and reports each time as a ratio to "shipped", measured in the same run with the variants interleaved, and
the cosine between the variant's gradient and the shipped one (guidance uses only the normalized direction).

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


def decoder_variant(dc, vae, latent_format, dtype, channels_last: bool):
    """The pack's vae_decoder with the copy made in `dtype` and, optionally, channels_last."""
    import torch

    src = dc.vae_decoder(vae, latent_format)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def build(device):
        net = dc.materialize(vae.first_stage_model, device=device, dtype=dtype, drop=dc._ENCODER_NAMES)
        net = net.to(memory_format=fmt)

        def decode(x0):
            z = latent_format.process_out(x0).to(dtype).contiguous(memory_format=fmt)
            y = net.decode(z).float()
            return ((y + 1.0) / 2.0).clamp(0.0, 1.0)
        return decode
    return dataclasses.replace(src, build=build)


def term_variant(dc, term, metric, dtype, channels_last: bool):
    """The pack's pyiqa term with the copy in channels_last and the forward under CPU autocast to `dtype`."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def build(device):
        net = dc.materialize(metric.net, device=device).to(memory_format=fmt)

        def score(images):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = net(images.contiguous(memory_format=fmt))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.float().reshape(images.shape[0], -1).mean(1)
        return score
    return dataclasses.replace(term, build=build)


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
    import torch
    import torch.cpu
    import comfy.latent_formats

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    dc, core = pack.guidance.differentiable_copies, pack.guidance.gradient_guidance
    score_term = pack.nodes.gradient_guidance.score_term
    latent_format = comfy.latent_formats.SD15()
    vaes = gg_bench.random_vaes()
    metrics = {m: gg_bench.random_metric(m) for m in args.metrics}
    cpu = torch.device("cpu")
    x0 = torch.randn(1, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(3))
    flavours = {"shipped": None, "fp32 CL": (torch.float32, True), "bf16 CL": (torch.bfloat16, True)}

    rows = []
    for text in args.configs:
        decoder, cap = gg_bench.parse_config(text)
        for mname in args.metrics:
            base_term = score_term(metrics[mname], 1.0, "maximize")
            cfg = core.GuidanceConfig(max_decode_size=cap)
            grads, variants = {}, {}
            for flavour, spec in flavours.items():
                if spec is None:
                    src, term = dc.vae_decoder(vaes[decoder], latent_format), base_term
                else:
                    src = decoder_variant(dc, vaes[decoder], latent_format, *spec)
                    term = term_variant(dc, base_term, metrics[mname], *spec)

                def run(src=src, term=term, flavour=flavour):
                    with torch.inference_mode():  # as inside a prompt; the hook leaves it the same way
                        with torch.inference_mode(False), torch.enable_grad():
                            grads[flavour] = core.guidance_gradient(x0, src.build(cpu), [term.build(cpu)], [term], cfg,
                                                                    src.upscale_ratio)[0]
                variants[flavour] = run
            med = common.interleaved_medians(variants, args.rounds)
            ref = grads["shipped"].flatten()
            row = [gg_bench.label(decoder, cap, mname), f"{med['shipped']:.2f} s"]
            for flavour in list(flavours)[1:]:
                cos = float(torch.nn.functional.cosine_similarity(grads[flavour].flatten(), ref, dim=0))
                row.append(f"{med[flavour]:.2f} s (speed-up {med['shipped'] / med[flavour]:.2f}x, cos {cos:.4f})")
            rows.append(row)
    amx = torch.cpu._is_amx_tile_supported() if hasattr(torch.cpu, "_is_amx_tile_supported") else "unknown"
    common.print_table(f"Guidance gradient (copies + decode + IQA + backward), shipped vs proposed builds (CPU "
                       f"{torch.backends.cpu.get_cpu_capability()}, AMX tiles: {amx}, {torch.get_num_threads()} threads, "
                       f"{args.latent}x{args.latent} latent, median of {args.rounds} interleaved rounds)",
                       ["decoder @ cap, metric", "shipped (fp32)"] + list(flavours)[1:], rows)
    print(f"\nwhole run: {time.perf_counter() - wall0:.0f} s; 1-min load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs (other processes share them)")


if __name__ == "__main__":
    main()
