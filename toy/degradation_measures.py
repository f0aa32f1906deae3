"""Three plain measures of the toy's three degradations, one each, that no toy model was trained on.

The toy proof asks that each degradation moves the right way on its own from p1 to p99. A single quality
score cannot show that, and the offline metrics mix the three (PIQE is blind to JPEG at 64 px, and any
gradient measure rises with impulse noise). So each measure first takes away what the other two do:

- sharpness: the mean absolute difference of horizontally and vertically adjacent pixels of the grey image
  after a 3x3 median filter (which removes isolated impulses), counted only inside 8x8 blocks (so JPEG block
  edges add nothing). Blur lowers it; so does heavy JPEG, which flattens the inside of its blocks.
- impulse share: the fraction of pixels that differ from their 3x3 median by more than IMPULSE_STEP in some
  channel. Isolated black or white pixels do; blur and JPEG ringing at the toy's levels rarely do.
- blockiness: the mean absolute step across the 8 px JPEG grid divided by the mean step inside blocks, on
  the grey image (impulses raise both alike; a median filter would smooth the block edges away). 1 for a
  picture without a grid; JPEG raises it; blur pulls it towards 1.

On 1,500 toy pictures with one degradation each (SRCC against its level): sharpness -0.52 for blur,
impulse share 0.97 for noise, blockiness 0.81 for JPEG; each measure's SRCC with the other two levels is
within 0.15 of 0, except the impulse share, which blur lowers (-0.76: it also smooths fine detail that the
median filter counts as outliers).

Higher sharpness, lower impulse share and lower blockiness are better.
"""

from __future__ import annotations

import numpy as np

IMPULSE_STEP = 0.3  # in [0, 1] units: far above JPEG ringing and blur, below a black or white impulse
BLOCK = 8  # the JPEG grid
MEASURES = {"sharpness": False, "impulse share": True, "blockiness": True}  # name -> lower is better


def _grey(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64).mean(-1) if images.shape[-1] == 3 else images.astype(np.float64)


def _median3(x: np.ndarray) -> np.ndarray:
    """3x3 median over the last two axes (edge pixels repeated)."""
    from scipy.ndimage import median_filter

    size = (1,) * (x.ndim - 2) + (3, 3)
    return median_filter(x, size=size, mode="nearest")


def _steps(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|steps| across the grid, |steps| inside blocks) per image, horizontal and vertical together."""
    across, inside = [], []
    for axis in (-1, -2):
        d = np.abs(np.diff(g, axis=axis))
        n = d.shape[axis]
        on_grid = (np.arange(n) % BLOCK) == BLOCK - 1
        take = np.moveaxis(d, axis, -1)
        across.append(take[..., on_grid].reshape(len(g), -1))
        inside.append(take[..., ~on_grid].reshape(len(g), -1))
    return np.concatenate(across, 1).mean(1), np.concatenate(inside, 1).mean(1)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """{measure: [N] values} of images [N, H, W, 3] in [0, 1] (H and W multiples of 8)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % BLOCK or x.shape[2] % BLOCK:
        raise ValueError(f"images must be [N, H, W, 3] with H and W multiples of {BLOCK}; got {list(x.shape)}")
    grey = _grey(x)
    _, inside = _steps(_median3(grey))
    across, inside_raw = _steps(grey)
    per_channel = np.moveaxis(x, -1, 1)
    outlier = (np.abs(per_channel - _median3(per_channel)) > IMPULSE_STEP).any(1)
    return {
        "sharpness": inside,
        "impulse share": outlier.mean((1, 2)),
        "blockiness": across / np.maximum(inside_raw, 1e-6),
    }
