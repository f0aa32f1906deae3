"""The toy's four references (toy/reference_images.py): one photo, clean and with each degradation alone."""

from __future__ import annotations

import numpy as np
import pytest

from toy.degradation_measures import measure
from toy.errors import ToyError
from toy.patches import framed
from toy.reference_images import KINDS, references
from toy.sources import SOURCES, load_rgb


def test_the_clean_reference_is_the_framed_photo_and_each_other_is_degraded_by_its_own_type():
    batch = references("coffee", 1.0)
    assert batch.shape == (len(KINDS), 64, 64, 3) and batch.dtype == np.uint8
    coffee = next(s for s in SOURCES if s.name == "coffee")
    assert np.array_equal(batch[KINDS.index("clean")], framed(load_rgb(coffee)))
    m = measure(batch.astype(np.float64) / 255.0)
    clean, blur, noise, jpeg = (KINDS.index(k) for k in ("clean", "blur", "noise", "jpeg"))
    # each type is the worst by its own measure (the measures are those of the reference proof). Measured:
    # sharpness 0.0126 blurred against 0.0336 clean, impulse share 0.136 against at most 0.0032, blockiness
    # 2.68 against at most 1.03. The pictures are fixed (seeded noise, PIL's JPEG, scipy's filter), so another
    # CPU changes them by a level of 255 at most; the factors leave room for far more than that.
    assert m["sharpness"][blur] < 0.5 * m["sharpness"][clean]
    assert m["impulse share"][noise] > 10 * max(m["impulse share"][k] for k in (clean, blur, jpeg))
    assert m["blockiness"][jpeg] > 1.5 * max(m["blockiness"][k] for k in (clean, blur, noise))


def test_the_same_seed_gives_the_same_references_and_level_zero_is_clean():
    assert np.array_equal(references("camera", 0.6, seed=3), references("camera", 0.6, seed=3))
    flat = references("camera", 0.0)
    assert all(np.array_equal(flat[0], flat[k]) for k in range(1, len(KINDS)))


@pytest.mark.parametrize(("photo", "level", "words"), [("teapot", 0.5, "unknown toy photo"), ("coffee", 1.5, "[0, 1]")])
def test_bad_references_are_refused_by_name(photo, level, words):
    with pytest.raises(ToyError, match=words.replace("[", r"\[").replace("]", r"\]")):
        references(photo, level)
