"""The toy's reference pictures for Reference Quality Transfer: one source photo, clean and with each of the
toy's three degradations alone (toy/patches.py), so that a sheet or a proof can compare what each type of
reference transfers from the same photo."""

from __future__ import annotations

import numpy as np

from .errors import ToyError
from .patches import Degradation, degrade, framed
from .sources import SOURCES, load_rgb

KINDS = ("clean", "blur", "noise", "jpeg")  # the batch order of references()


def photo_names() -> list[str]:
    return [s.name for s in SOURCES]


def degradation(kind: str, level: float) -> Degradation:
    """The Degradation of one KINDS entry: that type alone at `level`, or none."""
    if kind not in KINDS:
        raise ToyError(f"unknown reference kind {kind!r}: one of {', '.join(KINDS)}")
    return Degradation(*(level if kind == k else 0.0 for k in ("blur", "noise", "jpeg")))


def references(photo: str, level: float, seed: int = 0) -> np.ndarray:
    """uint8 [4, 64, 64, 3]: the photo's centred square, in KINDS order."""
    by_name = {s.name: s for s in SOURCES}
    if photo not in by_name:
        raise ToyError(f"unknown toy photo {photo!r}: one of {', '.join(by_name)}")
    if not 0.0 <= level <= 1.0:
        raise ToyError(f"level {level} is outside [0, 1]: 0 is clean, 1 the toy's worst")
    square = framed(load_rgb(by_name[photo]))
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.stack([degrade(square, degradation(k, level), rng) for k in KINDS])
