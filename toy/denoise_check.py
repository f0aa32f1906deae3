"""How well a toy checkpoint denoises, per noise level: clean training patches, noised at fixed sigmas,
one eps prediction each. Prints eps MSE and the x0 error against sigma itself (an x0 RMSE equal to sigma
means no noise was removed). This is how the grain of the c = 1 skip was found (toy/unet.py).

    python -m toy.denoise_check --ckpt weights/toy/toy_base.safetensors --data out/toy/patches
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

SIGMAS = (14.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05)


def clean_patches(data: Path, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first n undegraded patches of a toy patch folder (its manifest <data>.csv), [n,64,64,3] in [0,1]."""
    from PIL import Image

    rows = [
        r
        for r in csv.DictReader((data.parent / f"{data.name}.csv").open())
        if float(r["blur"]) + float(r["noise"]) + float(r["jpeg"]) == 0
    ][:n]
    images = np.stack(
        [np.asarray(Image.open(data / f"{r['id']}.png").convert("RGB"), dtype=np.float32) / 255 for r in rows]
    )
    return torch.from_numpy(images), [r["caption"] for r in rows]


def check(ckpt: Path, data: Path, n: int = 16, seed: int = 0) -> list[tuple[float, float, float]]:
    """(sigma, eps MSE, x0 RMSE) per sigma of SIGMAS."""
    from .model import load_toy_checkpoint

    patcher, clip, vae = load_toy_checkpoint(ckpt)
    model = patcher.model
    images, captions = clean_patches(data, n)
    z = model.process_latent_in(vae.encode(images))
    ms, unet = model.model_sampling, model.diffusion_model
    context = clip.table.encode_texts(captions)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in SIGMAS:
            sigma = torch.full((len(captions),), s)
            eps = torch.randn(z.shape, generator=g)
            noisy = z + eps * s
            pred = unet(ms.calculate_input(sigma, noisy), ms.timestep(sigma).float(), context=context)
            out.append((s, float(((pred - eps) ** 2).mean()), float(((noisy - pred * s - z) ** 2).mean().sqrt())))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.denoise_check", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("weights/toy/toy_base.safetensors"))
    ap.add_argument("--data", type=Path, default=Path("out/toy/patches"))
    ap.add_argument("--n", type=int, default=16)
    a = ap.parse_args(argv)
    print("| sigma | eps MSE | x0 RMSE | x0 RMSE / sigma |\n|---|---|---|---|")
    for s, mse, rmse in check(a.ckpt, a.data, a.n):
        print(f"| {s:g} | {mse:.4f} | {rmse:.4f} | {rmse / s:.3f} |")


if __name__ == "__main__":
    main()
