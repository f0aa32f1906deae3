"""Degraded 64x64 pictures of the toy photos, written as an image folder with caption sidecars.

Every picture frames most of one photo (a square of 80-100 % of its short side at a random place,
area-downscaled to 64 px, maybe mirrored), so the base learns each subject whole and draws something a person
recognizes, then is degraded at random: gaussian blur, impulse (salt-and-pepper) noise and JPEG, at levels in [0, 1] from clean to
ruined (draw_degradation), some combined, some pictures clean. Deterministic from the seed: picture i
uses numpy's Generator(seed, i).

Why whole photos: an earlier toy trained on 64-256 px crops of ~512 px photos, which are textures (fur,
brick, grass); its samples and its quality sweep were textures too, in which no one could see a change.

Why impulse noise and not gaussian: gaussian pixel noise in the training images is the very noise the
diffusion process adds. A base model trained on such patches cannot tell, at low sigma, its own noise from the
image's, so it learns to keep it: its samples stayed grainy whatever the target (PIQE about 68 at every
percentile), and the adapter had nothing to steer. Impulse noise is a kind of noise the forward process never
makes, so the base can learn to remove diffusion noise and still generate noisy-looking images when asked.
Measured on the two bases (toy.denoise_check, docs/training.md "The toy world").

    python -m toy.patches --out out/toy/patches --count 8000 --seed 0
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
FRAME = (0.8, 1.0)  # side of the square crop, as a fraction of the photo's short side
# Level 1 ("ruined") of each degradation.
BLUR_SIGMA_MAX = 3.0  # px, gaussian sigma
IMPULSE_MAX = 0.15  # fraction of pixels set to black or white
JPEG_QUALITY = (95, 5)  # quality at level 0 and at level 1
P_CLEAN = 0.05


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


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square of FRAME of the short side at a random place, area-downscaled to SIZE, maybe mirrored."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(round(min(h, w) * rng.uniform(*FRAME)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = np.asarray(Image.fromarray(photo[y : y + side, x : x + side]).resize((SIZE, SIZE), Image.BOX))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def framed(photo: np.ndarray) -> np.ndarray:
    """The photo's centred square of its whole short side at SIZE: its reference look, for the check that a
    generated picture shows its caption's subject (toy/recognize.py)."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(photo[y : y + side, x : x + side]).resize((SIZE, SIZE), Image.BOX))


def draw_degradation(rng: np.random.Generator) -> Degradation:
    """Clean with P_CLEAN, else a severity s ~ U(0, 1) and a non-empty random subset of {blur, noise, jpeg}:
    one of them at level s, the others at s x U(0.5, 1). The largest level is s, so the quality label
    1 - s (toy/quality_net.py, toy/genziqa_data.py) is uniform from ruined to clean, with no pile of ties at
    either end: every quality percentile is a different picture quality."""
    if rng.random() < P_CLEAN:
        return Degradation(0.0, 0.0, 0.0)
    while True:
        on = rng.random(3) < 0.5
        if on.any():
            break
    s = rng.uniform(0.0, 1.0)
    levels = s * rng.uniform(0.5, 1.0, size=3)
    levels[rng.choice(np.flatnonzero(on))] = s
    return Degradation(*(float(round(v, 4)) for v in levels * on))


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
    crop = random_crop(photos[s], rng)
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
    ap.add_argument("--count", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    m = write_patches(a.out, a.count, a.seed)
    log.info("wrote %d patches to %s (manifest %s)", a.count, a.out, m)


if __name__ == "__main__":
    main()
