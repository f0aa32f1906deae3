"""The toy's image folder (NNNNNN.png + NNNNNN.txt caption) loaded whole, for the base trainer.

The toy set is ~20k 64x64 patches (~250 MB as uint8), so the base trainer holds it in memory. It is read
with the same reader as every training dataset (training/common/datasets.py: order, captions, decode errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ToyError


def read_folder(folder: str | Path, size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """(uint8 [N,size,size,3], captions) of every image in the folder, in the dataset's order (sorted names)."""
    from training.common.datasets import open_dataset

    folder = Path(folder)
    if not folder.is_dir():
        raise ToyError(f"{folder}: image folder not found; build it with python -m toy.patches --out {folder}")
    dataset = open_dataset(str(folder))
    count = dataset.count() or 0
    if not count:
        raise ToyError(f"{folder}: no images in the folder")
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    captions = []
    for i, sample in enumerate(dataset.samples()):
        arr = np.asarray(sample.image)
        if arr.shape[:2] != (size, size):
            raise ToyError(
                f"{sample.source}: image is {arr.shape[1]}x{arr.shape[0]}, the toy model needs {size}x{size}"
            )
        images[i] = arr
        captions.append(sample.require_caption().strip())
    return torch.from_numpy(images), captions
