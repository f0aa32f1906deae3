"""Benchmark: seconds per image of GenzIQA against topiq_nr, both through the IQA Score node, in the same run.

GenzIQA runs on a real-size SD1.5 UNet (the SD 2.x UNet has the same blocks and about the same cost), a
real-size SD VAE encoder and the file's timesteps (the authors' 8 by default), random weights: timing does not
need trained ones. The text encoder runs once, when the scorer is built, so a 2-layer host CLIP of the right
width stands in for it. topiq_nr is pyiqa's network with random weights. Images are 512 px (GenzIQA's input
size, to which the file resizes every image; topiq_nr scores them as they are). Also timed: GenzIQA on latents alone (what guidance on the latent
pays, with no VAE), and one UNet call of the sampler's cfg batch, the unit that sampling costs.

Rounds are interleaved; each row is the median over rounds, and its ratio is against topiq_nr measured in
the same rounds.

    .venv/bin/python bench/genziqa_score.py [--rounds 2] [--size 512] [--timesteps 8]
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile

os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))  # random builds only

import common  # noqa: E402

# The host's SD1.x/SD2.x VAE configuration (what comfy.sd.VAE builds for such a checkpoint).
SD_VAE = dict(
    double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
    num_res_blocks=2, attn_resolutions=[], dropout=0.0,
)  # fmt: skip


def random_sd_vae():
    """The host's VAE class around a real-size SD VAE with random weights."""
    import comfy.sd
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    with torch.inference_mode(False), torch.no_grad():
        net = AutoencoderKL(ddconfig=dict(SD_VAE), embed_dim=4)
        g = torch.Generator().manual_seed(0)
        for p in net.parameters():
            bound = 1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.02
            p.uniform_(-bound, bound, generator=g)
        return comfy.sd.VAE(sd=net.state_dict(), device=torch.device("cpu"))


def genziqa_model(pack, timesteps: int):
    """The pack's IQA_MODEL for GenzIQA on a real-size SD1.5 UNet, as Load GenzIQA makes it."""
    import numpy as np

    gz = pack.guidance.genziqa
    fresh = importlib.import_module(pack.__name__ + ".guidance.genziqa.fresh")
    iqa_model = importlib.import_module(pack.__name__ + ".guidance.genziqa.iqa_model")
    more_nodes = importlib.import_module(common.FIXTURES_NAME + ".more_nodes")
    model = common.real_size_model("sd15")
    clip = more_nodes.tiny_host_clip(common.CONFIGS["sd15"]["context_dim"])
    # the authors' 8 test timesteps (9, 21, ..., 93) or an evenly spaced subset of them
    steps = tuple(int(t) for t in np.linspace(9, 93, timesteps).round()) if timesteps != 8 else None
    meta = {"timesteps": steps} if steps else {}
    file = fresh.fresh_file(model, clip, "sd1", up_std=0.01, **meta)
    scorer = gz.GenzIQAScorer(model, clip, random_sd_vae(), file)
    return iqa_model.GenzIQAModel(scorer, "genziqa:bench"), scorer, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--timesteps", type=int, default=8)
    args = ap.parse_args()
    pack = common.start_host()
    import torch

    torch.manual_seed(0)
    genz, scorer, model = genziqa_model(pack, args.timesteps)
    topiq = common.random_iqa_model("topiq_nr")
    node = pack.nodes.iqa_score.IQAScore()
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    side = (scorer.meta.image_size or args.size) // 8  # the latent GenzIQA scores an image at
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))

    def score_with(iqa):
        def run():
            with torch.inference_mode():
                node.score(image, iqa, 1)

        return run

    def latents_only():
        with torch.inference_mode():
            scorer.score_latents(latent)

    variants = {
        "topiq_nr": score_with(topiq),
        "genziqa": score_with(genz),
        "genziqa_latent": latents_only,
        "unet_cfg_step": common.unet_step(model, "sd15", side),
    }
    med = common.interleaved_medians(variants, args.rounds)
    n = len(scorer.meta.timesteps)
    labels = {
        "topiq_nr": f"topiq_nr, IQA Score, {args.size} px (baseline)",
        "genziqa": f"GenzIQA, IQA Score, {args.size} px: VAE encode + {n} UNet calls (batch 2)",
        "genziqa_latent": f"GenzIQA on a {side}x{side} latent, no VAE",
        "unet_cfg_step": "one sampler UNet call (cfg batch 2), for scale",
    }
    rows = [[labels[k], f"{med[k]:.3f}", f"{med[k] / med['topiq_nr']:.1f}"] for k in variants]
    common.print_table(
        f"GenzIQA against topiq_nr on the CPU ({torch.get_num_threads()} threads, random weights, "
        f"real-size SD1.5 UNet and SD VAE, median of {args.rounds} rounds)",
        ["what", "s / image", "x topiq_nr"],
        rows,
    )


if __name__ == "__main__":
    main()
