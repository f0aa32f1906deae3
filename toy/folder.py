"""A minimal reader for the toy's image folder (NNNNNN.png + NNNNNN.txt caption), loaded whole.

The toy set is ~20k 64x64 patches (~250 MB as uint8), so the base trainer holds it in memory; the generic
streaming readers live in training/datasets.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ToyError

EXTS = (".png", ".jpg", ".jpeg", ".webp")


def read_folder(folder: str | Path, size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """(uint8 [N,size,size,3], captions) of every image in the folder, sorted by file name."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ToyError(f"{folder}: image folder not found; build it with python -m toy.patches --out {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS)
    if not files:
        raise ToyError(f"{folder}: no images ({', '.join(EXTS)}) in the folder")
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)
    captions = []
    for i, p in enumerate(files):
        side = p.with_suffix(".txt")
        if not side.is_file():
            raise ToyError(f"{p}: caption sidecar {side.name} missing; write one line of text beside the image")
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise ToyError(f"{p}: cannot decode the image ({e}); delete or replace it") from None
        if arr.shape[:2] != (size, size):
            raise ToyError(f"{p}: image is {arr.shape[1]}x{arr.shape[0]}, the toy model needs {size}x{size}")
        images[i] = arr
        captions.append(side.read_text().strip())
    return torch.from_numpy(images), captions
