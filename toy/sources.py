"""The toy world's photos: natural images that ship inside installed PyPI wheels (no downloads).

Each entry names the wheel file, the caption and the licence the shipping package states for it
(scikit-image: skimage/data/_fetchers.py docstrings; matplotlib: sample_data; scikit-learn:
sklearn/datasets/images/README.txt). Grey photos become RGB.

Only photos with one recognizable subject are here: the toy base learns each whole photo (toy/patches.py
frames 80-100 % of it), so that a person can see what the adapter does to a picture. The pure textures that
scikit-image also ships (brick, grass, gravel) and the Hubble deep field were left out: a 64 px model draws
them as grey noise, in which no degradation can be seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ToyError


@dataclass(frozen=True)
class Source:
    name: str  # id used in the manifest
    package: str  # "skimage", "matplotlib" or "sklearn"
    file: str  # path inside the package's data folder
    caption: str  # the sidecar caption
    licence: str  # as the shipping package states it


SOURCES: tuple[Source, ...] = (
    Source(
        "astronaut",
        "skimage",
        "astronaut.png",
        "a photo of an astronaut",
        "NASA (Eileen Collins); no known copyright restrictions, public domain",
    ),
    Source("camera", "skimage", "camera.png", "a photo of a cameraman", "CC0 by the photographer (Lav Varshney)"),
    Source("coffee", "skimage", "coffee.png", "a photo of coffee", "CC0 by the photographer (Rachel Michetti)"),
    Source("chelsea", "skimage", "chelsea.png", "a photo of a cat", "CC0 by the photographer (Stefan van der Walt)"),
    Source("rocket", "skimage", "rocket.jpg", "a photo of a rocket", "SpaceX photo, released into the public domain"),
    Source("retina", "skimage", "retina.jpg", "a photo of a retina", "CC0 1.0 (Mikael Häggström, Wikimedia Commons)"),
    Source(
        "motorcycle_left",
        "skimage",
        "motorcycle_left.png",
        "a photo of a motorcycle",
        "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), downsampled by scikit-image; no licence stated there, cite the paper",
    ),
    Source(
        "motorcycle_right",
        "skimage",
        "motorcycle_right.png",
        "a photo of a motorcycle",
        "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), downsampled by scikit-image; no licence stated there, cite the paper",
    ),
    Source(
        "coins",
        "skimage",
        "coins.png",
        "a photo of coins",
        "Brooklyn Museum Collection; no known copyright restrictions",
    ),
    Source(
        "grace_hopper",
        "matplotlib",
        "sample_data/grace_hopper.jpg",
        "a photo of grace hopper",
        "US Navy official photo, public domain as a work of the US government; matplotlib sample_data states no licence",
    ),
    Source(
        "china",
        "sklearn",
        "china.jpg",
        "a photo of a temple",
        "CC BY 2.0, danielbuechele on Flickr (attribution required)",
    ),
    Source(
        "flower",
        "sklearn",
        "flower.jpg",
        "a photo of a flower",
        "CC BY 2.0, vultilion on Flickr (attribution required)",
    ),
)


def package_data_dir(package: str) -> Path:
    try:
        if package == "skimage":
            import skimage.data

            return Path(skimage.data.__file__).parent
        if package == "matplotlib":
            import matplotlib

            return Path(matplotlib.get_data_path())
        if package == "sklearn":
            import sklearn.datasets

            return Path(sklearn.datasets.__file__).parent / "images"
    except ImportError as e:
        raise ToyError(
            f"The toy's photos come from the {package} wheel, which this Python lacks ({e}). Install the toy "
            "world's packages in this environment: pip install -r requirements/train.txt -c requirements/host.txt"
        ) from None
    raise ToyError(f"unknown source package {package!r}")


def load_rgb(src: Source) -> np.ndarray:
    """The photo as uint8 [H, W, 3]."""
    from PIL import Image

    path = package_data_dir(src.package) / src.file
    if not path.is_file():
        raise ToyError(
            f"{path}: toy source photo missing; install the package that ships it "
            "(scikit-image, matplotlib and scikit-learn: requirements/train.txt)"
        )
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
