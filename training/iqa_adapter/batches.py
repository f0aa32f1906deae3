"""A process's training micro-batches, and the stream position of every sample in them.

Each process streams its own share of the dataset (training.common.datasets.train_stream: epoch after epoch,
through a seeded shuffle buffer; a resumed run starts after the samples already consumed, without
decoding them). Its n-th sample has the global position n * world + rank: one name, for the whole run,
for that sample's draws (training/common/draws.py). With an image folder and no shuffling, rank r's n-th sample
is the folder's item n * world + r, so N processes see, position by position, what one process with
the same global batch sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch


@dataclass
class Batch:
    positions: list[int]
    images: torch.Tensor  # [B, H, W, 3] in [0, 1]
    captions: list[str]
    vectors: torch.Tensor  # [B, d] metric values (z or raw), before encoding


def micro_batches(
    samples: Iterator[Any],
    batch_size: int,
    rank: int,
    world: int,
    start: int,
    prepare: Callable[[Any], tuple[torch.Tensor, str, torch.Tensor]],
) -> Iterator[Batch]:
    """Batches of this process's stream, which begins at its local sample number `start`;
    prepare(sample) -> (image, caption, vector)."""
    n = start
    while True:
        chunk = [next(samples) for _ in range(batch_size)]
        items = [prepare(s) for s in chunk]
        yield Batch(
            [(n + k) * world + rank for k in range(batch_size)],
            torch.stack([i[0] for i in items]),
            [i[1] for i in items],
            torch.stack([i[2] for i in items]),
        )
        n += batch_size


def prepare_image(image: Any, resolution: int) -> torch.Tensor:
    """A PIL image -> [resolution, resolution, 3] float in [0, 1]: shorter side resized, then center-cropped."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    s = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
