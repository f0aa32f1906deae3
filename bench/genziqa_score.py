"""Benchmark: GenzIQA's cost against topiq_nr, in the same run: per scored image, and per guided sampling step.

GenzIQA runs on a real-size SD1.5 UNet (the SD 2.x UNet has the same blocks and about the same cost) and the
real-size SD VAE, random weights (timing does not need trained ones), with the file's timesteps (the
authors' 8, or --timesteps). The text encoder runs once, when the scorer is built, so a 2-layer host CLIP
of the right width stands in for it. topiq_nr is pyiqa's network with random weights.

1. Scoring, through the IQA Score node: 512 px images (GenzIQA's input size, to which the file resizes every
   image; topiq_nr scores them as they are); also GenzIQA on the latent alone (no VAE encode).
2. One guided step, as the sampler calls it (the host's sampling_function: cfg batch, CFG, post-CFG hook):
   plain; IQA Gradient Guidance with TAESD + topiq_nr (decode capped at 512 px); and IQA Gradient Guidance
   with Load GenzIQA's model, which scores the latent itself (no decode) on its per-run differentiable copy
   of the UNet (made at the warm-up call, the run's first guided step; every timed call repeats the same
   sigma, so they all belong to that run), each timestep's UNet call checkpointed.

Rounds are interleaved; each row is the median over rounds; ratios are against the baseline of its table
measured in the same rounds.

    OMP_NUM_THREADS=2 .venv/bin/python bench/genziqa_score.py [--rounds 2] [--size 512] [--timesteps 8 1]
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile

os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))  # random builds only

import common  # noqa: E402
import gradient_guidance as gg  # noqa: E402  (its random VAEs, guided model and sampler constants)


def genziqa_scorer(pack, model, vae, timesteps: int):
    """A GenzIQA scorer on `model` with the authors' 8 timesteps or `timesteps` evenly spread over them."""
    import numpy as np

    gz = pack.guidance.genziqa
    fresh = importlib.import_module(pack.__name__ + ".guidance.genziqa.fresh")
    more_nodes = importlib.import_module(common.FIXTURES_NAME + ".more_nodes")
    clip = more_nodes.tiny_host_clip(common.CONFIGS["sd15"]["context_dim"])
    steps = tuple(int(t) for t in np.linspace(9, 93, timesteps).round()) if timesteps > 1 else (57,)
    file = fresh.fresh_file(model, clip, "sd1", up_std=0.01, timesteps=steps)
    return gz.GenzIQAScorer(model, clip, vae, file)


def genziqa_guided(pack, model, vae, scorer):
    """The IQA Gradient Guidance node's model, guided by GenzIQA (defaults as for the TAESD variant)."""
    iqa_model = importlib.import_module(pack.__name__ + ".guidance.genziqa.iqa_model")
    return gg.guided_model(pack, model, iqa_model.GenzIQAModel(scorer, "genziqa:bench"), vae, 512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 1], help="GenzIQA timesteps per score")
    args = ap.parse_args()
    pack = common.start_host()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    model = common.real_size_model("sd15")
    vaes = gg.random_vaes()
    node = pack.nodes.iqa_score.IQAScore()
    iqa_model = importlib.import_module(pack.__name__ + ".guidance.genziqa.iqa_model")
    topiq = common.random_iqa_model("topiq_nr")
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    side = args.size // 8
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))

    def score_with(iqa):
        def run():
            with torch.inference_mode():
                node.score(image, iqa, 1)

        return run

    def on_latent(scorer):
        def run():
            with torch.inference_mode():
                scorer.score_latents(latent)

        return run

    scoring = {"topiq_nr": score_with(topiq)}
    labels = {"topiq_nr": f"topiq_nr, IQA Score, {args.size} px (baseline)"}
    stepping = {"plain": common.sampler_call(model, "sd15", side, gg.SIGMA, gg.CFG)}
    step_labels = {"plain": "plain step: UNet on the cfg batch (baseline)"}
    taesd = gg.guided_model(pack, model, gg.random_metric("topiq_nr"), vaes["taesd"], args.size)
    stepping["taesd"] = common.sampler_call(taesd, "sd15", side, gg.SIGMA, gg.CFG)
    step_labels["taesd"] = f"guided: TAESD decode ({args.size} px) + topiq_nr, gradient through both"
    for n in args.timesteps:
        scorer = genziqa_scorer(pack, model, vaes["vae"], n)
        scoring[f"genziqa_{n}"] = score_with(iqa_model.GenzIQAModel(scorer, f"genziqa:{n}"))
        labels[f"genziqa_{n}"] = f"GenzIQA, IQA Score, {args.size} px: VAE encode + {n} UNet call(s) (batch 2)"
        scoring[f"latent_{n}"] = on_latent(scorer)
        labels[f"latent_{n}"] = f"GenzIQA on the {side}x{side} latent, {n} timestep(s), no VAE"
        guided = genziqa_guided(pack, model, vaes["vae"], scorer)
        stepping[f"genziqa_{n}"] = common.sampler_call(guided, "sd15", side, gg.SIGMA, gg.CFG)
        step_labels[f"genziqa_{n}"] = f"guided: GenzIQA gradient on the latent, {n} timestep(s), no decode"

    where = f"CPU, {torch.get_num_threads()} threads, random weights, real-size SD1.5 UNet and SD VAE"
    # Steps first: scoring loads the scorer's LoRA patches into the shared UNet, which the sampler calls below
    # would then run with (the host unpatches only when it loads another model; these calls load none).
    steps = common.interleaved_medians(stepping, args.rounds)
    med = common.interleaved_medians(scoring, args.rounds)
    common.print_table(
        f"Scoring one image ({where}; median of {args.rounds} rounds)",
        ["what", "s / image", "x topiq_nr"],
        [[labels[k], f"{med[k]:.3f}", f"{med[k] / med['topiq_nr']:.1f}"] for k in scoring],
    )
    common.print_table(
        f"One sampling step, {side}x{side} latent ({where}; median of {args.rounds} rounds)",
        ["what", "s / step", "x plain", "x TAESD + topiq_nr"],
        [
            [step_labels[k], f"{steps[k]:.2f}", f"{steps[k] / steps['plain']:.2f}", f"{steps[k] / steps['taesd']:.2f}"]
            for k in stepping
        ],
    )


if __name__ == "__main__":
    main()
