"""A contact sheet of toy-model samples, one row per caption, through the host's own sampler.

python -m toy.preview --ckpt out/toy/base/toy_base_ema.safetensors --out out/toy/base/preview.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .model import load_toy_checkpoint
from .sources import SOURCES
from .vae import empty_latent


def sample(
    model,
    clip,
    vae,
    caption: str,
    n: int,
    seed: int,
    steps: int,
    cfg: float,
    sampler: str = "euler",
    scheduler: str = "normal",
) -> torch.Tensor:
    """n images [n,64,64,3] in [0,1] for one caption (negative: the empty caption)."""
    import comfy.sample

    pos = clip.encode_from_tokens_scheduled(clip.tokenize(caption))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = empty_latent(64, 64, n)
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample(
        model, noise, steps, cfg, sampler, scheduler, pos, neg, latent, disable_pbar=True, seed=seed
    )
    return vae.decode(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.preview", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("out/toy/base/toy_base_ema.safetensors"))
    ap.add_argument("--out", type=Path, default=Path("out/toy/base/preview.png"))
    ap.add_argument("--per-caption", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from PIL import Image

    model, clip, vae = load_toy_checkpoint(a.ckpt)
    captions = sorted({s.caption for s in SOURCES})
    rows = []
    for i, c in enumerate(captions):
        img = sample(model, clip, vae, c, a.per_caption, a.seed + i, a.steps, a.cfg)
        rows.append(torch.cat(list(img), dim=1))
    grid = (torch.cat(rows, dim=0).numpy() * 255).round().astype(np.uint8)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(a.out)
    print(a.out, "rows:", "; ".join(captions))


if __name__ == "__main__":
    main()
