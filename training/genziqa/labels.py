"""The label file of `genziqa-train`: pyiqa's dataset meta format, a CSV whose first column is the image's
file name (relative to the image folder) and second its MOS; further columns (std, split, ...) are ignored.
A first row whose MOS field is not a number is a header (KonIQ-10k, SPAQ, LIVE-C and FLIVE meta CSVs have one).

Every problem is a TrainingError that names the rows or files at fault and the fix.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from training.common.errors import TrainingError

SHOWN = 5  # names listed in an error about many rows


@dataclass(frozen=True)
class Label:
    name: str  # as written in the label file
    path: Path
    mos: float
    row: int  # 1-based line of the label file


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_labels(label_file: Path, image_dir: Path) -> list[Label]:
    """The (image, MOS) rows of a pyiqa meta CSV, each image checked to exist in image_dir."""
    label_file, image_dir = Path(label_file), Path(image_dir)
    if not label_file.is_file():
        raise TrainingError(
            f"--labels {label_file}: no such file. Give a CSV of image name, MOS (pyiqa's meta format)."
        )
    if not image_dir.is_dir():
        raise TrainingError(f"--images {image_dir}: no such folder. Give the folder the label file's names are in.")
    with label_file.open(newline="", encoding="utf-8-sig") as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
    if rows and (len(rows[0][1]) < 2 or _number(rows[0][1][1]) is None):
        rows = rows[1:]  # a header: "image_name,MOS,..." (or any first row without a number as MOS)
    if not rows:
        raise TrainingError(
            f"--labels {label_file} has no label rows. Each row needs an image file name and its MOS, "
            "e.g. '10004473376.jpg,77.38' (a header row is allowed)."
        )
    labels = []
    for n, row in rows:
        if len(row) < 2:
            raise TrainingError(
                f"--labels {label_file} row {n} ({','.join(row)!r}) has one column; each row needs an image "
                "file name and its MOS."
            )
        mos = _number(row[1].strip())
        if mos is None:
            raise TrainingError(
                f"--labels {label_file} row {n}: the MOS {row[1]!r} (of {row[0]!r}) is not a finite number. "
                "The second column must hold each image's MOS; fix or remove that row."
            )
        name = row[0].strip()
        labels.append(Label(name, image_dir / name, mos, n))
    missing = [lab for lab in labels if not lab.path.is_file()]
    if missing:
        names = ", ".join(repr(lab.name) for lab in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise TrainingError(
            f"{len(missing)} of {len(labels)} images named in --labels {label_file.name} are not in --images "
            f"{image_dir}: {names}{more}. Give the folder the names are relative to, or remove those rows."
        )
    return labels


def check_sizes(labels: list[Label], stride: int) -> None:
    """Every image must be at least one latent cell (the VAE's stride) on each side; undecodable files are named."""
    from PIL import Image

    small = []
    for lab in labels:
        try:
            with Image.open(lab.path) as im:
                w, h = im.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
            raise TrainingError(
                f"Cannot read image {lab.path} (label row {lab.row}; {type(exc).__name__}: {exc}). Replace the file "
                "or remove its row from the label file."
            ) from None
        if min(w, h) < stride:
            small.append(f"{lab.name!r} ({w}x{h})")
    if small:
        more = f" and {len(small) - SHOWN} more" if len(small) > SHOWN else ""
        raise TrainingError(
            f"{len(small)} images are smaller than the model's latent stride ({stride} px on each side): "
            f"{', '.join(small[:SHOWN])}{more}. Upscale them or remove their rows from the label file."
        )
