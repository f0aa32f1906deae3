"""Degraded 64x64 patches of the toy photos, written as an image folder with caption sidecars.

Every patch is a random multi-scale crop (a region 1-4x the patch size, area-downscaled, so one photo gives
many distinct patches), flat crops rejected (PIQE scores them 100 whatever their quality), then degraded at
random: gaussian blur, impulse (salt-and-pepper) noise and JPEG, each at a level in [0, 1] from clean to
ruined, some combined, some patches clean. Deterministic from the seed: patch i uses numpy's Generator(seed, i).

Why impulse noise and not gaussian: gaussian pixel noise in the training images is the very noise the
diffusion process adds. A base model trained on such patches cannot tell, at low sigma, its own noise from the
image's, so it learns to keep it: its samples stayed grainy whatever the target (PIQE about 68 at every
percentile), and the adapter had nothing to steer. Impulse noise is a kind of noise the forward process never
makes, so the base can learn to remove diffusion noise and still generate noisy-looking images when asked.
Measured on the two bases (toy.denoise_check, docs/training.md "The toy world").

    python -m toy.patches --out out/toy/patches --count 20000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sources import SOURCES, load_rgb

log = logging.getLogger(__name__)

SIZE = 64
SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
# Level 1 ("ruined") of each degradation.
BLUR_SIGMA_MAX = 3.0  # px, gaussian sigma
IMPULSE_MAX = 0.15  # fraction of pixels set to black or white
JPEG_QUALITY = (95, 5)  # quality at level 0 and at level 1
P_CLEAN = 0.15
FLAT_STD = 0.035  # grey-level std in [0, 1] below which a crop is flat
FLAT_GRAD = 0.012  # mean |gradient| below which a crop is flat


@dataclass(frozen=True)
class Degradation:
    blur: float  # level in [0, 1]; 0 = not applied
    noise: float
    jpeg: float

    @property
    def blur_sigma(self) -> float:
        return BLUR_SIGMA_MAX * self.blur

    @property
    def impulse_fraction(self) -> float:
        return IMPULSE_MAX * self.noise

    @property
    def jpeg_quality(self) -> int | None:
        if self.jpeg <= 0:
            return None
        return int(round(JPEG_QUALITY[0] + (JPEG_QUALITY[1] - JPEG_QUALITY[0]) * self.jpeg))


def is_flat(patch: np.ndarray) -> bool:
    """True for crops with too little structure (sky, blank walls): low grey std or low mean gradient."""
    g = patch.astype(np.float32).mean(-1) / 255.0
    grad = 0.5 * (np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())
    return bool(g.std() < FLAT_STD or grad < FLAT_GRAD)


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop of SIZE*scale pixels at a random place, area-downscaled to SIZE, maybe mirrored."""
    from PIL import Image

    h, w = photo.shape[:2]
    scales = [s for s in SCALES if SIZE * s <= min(h, w)] or [1.0]
    side = int(round(SIZE * scales[rng.integers(len(scales))]))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if side != SIZE:
        crop = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.BOX))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def draw_degradation(rng: np.random.Generator) -> Degradation:
    """Clean with P_CLEAN, else a non-empty random subset of {blur, noise, jpeg}, each at a uniform level."""
    if rng.random() < P_CLEAN:
        return Degradation(0.0, 0.0, 0.0)
    while True:
        on = rng.random(3) < 0.5
        if on.any():
            break
    levels = rng.uniform(0.05, 1.0, size=3) * on
    return Degradation(*(float(round(v, 4)) for v in levels))


def degrade(patch: np.ndarray, d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Blur, then impulse noise, then JPEG (the order of a camera pipeline), uint8 in and out."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    x = patch.astype(np.float32) / 255.0
    if d.blur > 0:
        x = gaussian_filter(x, sigma=(d.blur_sigma, d.blur_sigma, 0), mode="reflect")
    if d.noise > 0:
        hit = rng.random(x.shape[:2]) < d.impulse_fraction  # whole pixels, black or white at random
        value = (rng.random(x.shape[:2]) < 0.5).astype(np.float32)
        x = np.where(hit[..., None], value[..., None], x)
    out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    q = d.jpeg_quality
    if q is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return out


def make_patch(photos: list[np.ndarray], seed: int, index: int):
    """(source index, uint8 patch, Degradation) of patch `index`: a function of (seed, index) only."""
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    s = int(rng.integers(len(photos)))
    for _ in range(200):
        crop = random_crop(photos[s], rng)
        if not is_flat(crop):
            break
    d = draw_degradation(rng)
    return s, degrade(crop, d, rng), d


def write_patches(out: Path, count: int, seed: int = 0, start: int = 0) -> Path:
    """Write patches start..count-1 as out/NNNNNN.png + .txt and a manifest out.parent/<name>.csv."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = [load_rgb(s) for s in SOURCES]
    manifest = out.parent / f"{out.name}.csv"
    with open(manifest, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(
            ["id", "source", "caption", "blur", "noise", "jpeg", "blur_sigma", "impulse_fraction", "jpeg_quality"]
        )
        for i in range(start, count):
            s, patch, d = make_patch(photos, seed, i)
            name = f"{i:06d}"
            Image.fromarray(patch).save(out / f"{name}.png", optimize=False)
            (out / f"{name}.txt").write_text(SOURCES[s].caption + "\n")
            wr.writerow(
                [
                    name,
                    SOURCES[s].name,
                    SOURCES[s].caption,
                    d.blur,
                    d.noise,
                    d.jpeg,
                    round(d.blur_sigma, 4),
                    round(d.impulse_fraction, 4),
                    d.jpeg_quality or "",
                ]
            )
            if (i + 1) % 2000 == 0:
                log.info("%d/%d patches", i + 1, count)
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.patches", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/toy/patches"))
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    m = write_patches(a.out, a.count, a.seed)
    log.info("wrote %d patches to %s (manifest %s)", a.count, a.out, m)


if __name__ == "__main__":
    main()
