"""Which toy photo a picture shows: the source photo whose framings are structurally closest to it.

The toy base learns each photo whole (toy/patches.py frames 80-100 % of its short side, maybe mirrored), so
a generated picture of "a photo of a cat" should look like one such framing of the cat photo. The check
compares the picture with every framing of every source (three crop sizes over that range, five places
along each axis, mirrored or not) by SSIM on grey images median-filtered and downscaled to COMPARE_SIZE,
where blur, impulse noise and JPEG blocks of a degraded picture weigh little, and names the source of the best framing. A
picture shows its caption's subject when that source has the caption (the motorcycle has two photos).

    python -m toy.recognize --ckpt weights/toy/toy_base.safetensors --seeds 8 --out out/toy/recognize
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .sources import SOURCES, load_rgb

COMPARE_SIZE = 32
FRAME_SIDES = (0.8, 0.9, 1.0)  # fractions of the short side, the span toy/patches.py trains on
FRAME_PLACES = 5  # positions along each axis, from one edge to the other


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float RGB [H, W, 3] -> float grey [COMPARE_SIZE, COMPARE_SIZE] in [0, 1]: a 3x3 median
    first (isolated impulses would otherwise dominate a low-contrast subject's structure), then area-averaged."""
    from PIL import Image, ImageFilter

    x = np.asarray(image)
    if x.dtype != np.uint8:
        x = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(x)).convert("L").filter(ImageFilter.MedianFilter(3))
    return np.asarray(im.resize((COMPARE_SIZE, COMPARE_SIZE), Image.BOX), dtype=np.float64) / 255.0


def framings(photo: np.ndarray) -> list[np.ndarray]:
    """Grey COMPARE_SIZE copies of the photo's square framings (sizes x places x mirror)."""
    h, w = photo.shape[:2]
    out = []
    for f in FRAME_SIDES:
        side = int(round(min(h, w) * f))
        for y in np.linspace(0, h - side, FRAME_PLACES).round().astype(int):
            for x in np.linspace(0, w - side, FRAME_PLACES).round().astype(int):
                g = _grey(photo[y : y + side, x : x + side])
                out += [g, g[:, ::-1]]
    return out


@lru_cache(maxsize=1)
def _references() -> tuple[tuple[str, ...], np.ndarray]:
    """(caption of each framing, framings [N, COMPARE_SIZE, COMPARE_SIZE]) of every source, built once."""
    captions, frames = [], []
    for src in SOURCES:
        fs = framings(load_rgb(src))
        frames += fs
        captions += [src.caption] * len(fs)
    return tuple(captions), np.stack(frames)


def _ssim(a: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """SSIM of one grey image against each reference (scikit-image's, 7 px window, data range 1)."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(a, r, data_range=1.0) for r in refs])


@dataclass(frozen=True)
class Match:
    caption: str  # the caption of the closest source photo
    ssim: float  # its SSIM
    own_ssim: float  # the best SSIM among the framings of the expected caption's photos


def nearest(image: np.ndarray, expected: str) -> Match:
    """The closest source's caption for one picture [H, W, 3], and how close the expected caption's photos are."""
    captions, refs = _references()
    s = _ssim(_grey(image), refs)
    best = int(np.argmax(s))
    own = max(v for v, c in zip(s, captions) if c == expected)
    return Match(captions[best], float(s[best]), float(own))


def recognized_fraction(images: Sequence[np.ndarray], expected: Sequence[str]) -> tuple[float, list[Match]]:
    """The share of pictures whose closest source photo has the expected caption, and every match."""
    matches = [nearest(im, c) for im, c in zip(images, expected)]
    return sum(m.caption == c for m, c in zip(matches, expected)) / max(len(matches), 1), matches


def captions() -> list[str]:
    """The toy's captions, sorted (one per subject; the motorcycle's two photos share one)."""
    return sorted({s.caption for s in SOURCES})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.recognize", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("weights/toy/toy_base.safetensors"))
    ap.add_argument("--seeds", type=int, default=8, help="samples per caption, seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=Path("out/toy/recognize"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the counts per caption here (the model card quotes them)")
    a = ap.parse_args(argv)
    import torch
    from PIL import Image

    from .model import load_toy_checkpoint
    from .preview import sample

    torch.set_num_threads(a.threads)
    model, clip, vae = load_toy_checkpoint(a.ckpt)
    a.out.mkdir(parents=True, exist_ok=True)
    total, hits, per_caption = 0, 0, {}
    for i, c in enumerate(captions()):
        imgs = [sample(model, clip, vae, c, 1, seed, a.steps, a.cfg)[0].numpy() for seed in range(a.seeds)]
        frac, matches = recognized_fraction(imgs, [c] * len(imgs))
        total, hits = total + len(imgs), hits + sum(m.caption == c for m in matches)
        sheet = (np.concatenate(imgs, 1) * 255).round().astype(np.uint8)
        Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(
            a.out / f"{i:02d}_{c.replace(' ', '_')}.png"
        )
        per_caption[c] = sum(m.caption == c for m in matches)
        wrong = ", ".join(sorted({m.caption for m in matches if m.caption != c}))
        print(f"{c}: {frac:.0%} recognized" + (f" (else: {wrong})" if wrong else ""))
    print(f"all: {hits}/{total} = {hits / total:.1%} recognized; sheets in {a.out}")
    if a.json:
        settings = {"ckpt": str(a.ckpt), "seeds": a.seeds, "steps": a.steps, "cfg": a.cfg}
        a.json.write_text(json.dumps({"recognized": hits, "total": total, "per_caption": per_caption, **settings}))


if __name__ == "__main__":
    main()
