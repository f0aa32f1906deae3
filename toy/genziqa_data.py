"""Toy patches with quality labels for GenzIQA: an image folder and a pyiqa-style meta CSV "name,mos".

The label is the degradation strength turned into a quality score: MOS = 100 * (1 - max(blur, noise,
jpeg)), the levels of toy/patches.py (each in [0, 1], 0 = not applied), so a clean patch is 100 and a
patch ruined by any one degradation is near 0. The held-out set uses another patch seed than the
training set, so no patch (crop and degradation) is shared.

    python -m toy.genziqa_data --out out/toy/genziqa/train --count 1500 --seed 0
    python -m toy.genziqa_data --out out/toy/genziqa/test --count 300 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from .patches import write_patches

log = logging.getLogger(__name__)


def quality(blur: float, noise: float, jpeg: float) -> float:
    """The label of a patch: 100 * (1 - the largest degradation level)."""
    return round(100.0 * (1.0 - max(blur, noise, jpeg)), 3)


def write_labels(manifest: Path, out: Path) -> Path:
    """A meta CSV (header "name,mos") from a patch manifest of toy/patches.py."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["name", "mos"])
        for r in rows:
            wr.writerow([f"{r['id']}.png", quality(float(r["blur"]), float(r["noise"]), float(r["jpeg"]))])
    return out


def write_set(out: Path, count: int, seed: int) -> Path:
    """Patches 0..count-1 of `seed` in out/, their manifest out.csv and the labels out.labels.csv."""
    out = Path(out)
    manifest = write_patches(out, count, seed)
    return write_labels(manifest, out.parent / f"{out.name}.labels.csv")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.genziqa_data", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    labels = write_set(a.out, a.count, a.seed)
    log.info("wrote %d patches to %s (labels %s)", a.count, a.out, labels)


if __name__ == "__main__":
    main()
