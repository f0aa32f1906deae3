"""Held-out correlation of a toy GenzIQA file with the toy labels, next to NIQE's on the same labels.

Scores every image of a label file (toy/genziqa_data.py: "name,mos", MOS = 100 * (1 - max degradation
level)) with GenzIQA on the toy base, and with pyiqa's NIQE through the pack's metric registry (64 px patches
upscaled bicubically to 192 px, as scripts/toy_sweep.py does; NIQE is lower-is-better, so its SRCC is
reported for -NIQE). Prints SRCC and PLCC (scipy.stats) as JSON and writes them to --json when given.

    python scripts/genziqa_toy_eval.py --file out/toy/genziqa_run/genziqa.safetensors \\
        --images out/toy/genziqa/test --labels out/toy/genziqa/test.labels.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

# The repository root, for training and toy when this runs as a script (scripts/ itself is on the path then).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_fixtures import TOY_BASE as BASE  # noqa: E402  (weights/toy/toy_base.safetensors)


def load_set(images: Path, labels: Path) -> tuple[torch.Tensor, np.ndarray]:
    """[N, 64, 64, 3] images in [0, 1] and their MOS, in label-file order."""
    from training.genziqa.labels import read_labels
    from training.genziqa.train import load_pixels

    rows = read_labels(labels, images)
    return torch.cat([load_pixels(r.path) for r in rows]), np.array([r.mos for r in rows], dtype=np.float64)


def genziqa_scores(file: Path, images: torch.Tensor, base: Path = BASE, batch: int = 50) -> np.ndarray:
    from training.common import host
    from training.common.core import guidance

    host.import_host()
    b = host.load_base(base, plugins=["toy"])
    fmt, scorer_mod = guidance("genziqa.file_format"), guidance("genziqa.scorer")
    scorer = scorer_mod.GenzIQAScorer(b.patcher, b.clip, b.vae, fmt.load_genziqa(file))
    return np.concatenate(
        [scorer.score_images(images[i : i + batch]).double().numpy() for i in range(0, len(images), batch)]
    )


def niqe_scores(images: torch.Tensor) -> np.ndarray:
    import toy_sweep

    return toy_sweep.score_images(images, "niqe", toy_sweep.NIQE_SIZE, toy_sweep.NIQE_DIRS)


def correlations(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    from scipy import stats

    return {"srcc": float(stats.spearmanr(pred, mos)[0]), "plcc": float(stats.pearsonr(pred, mos)[0])}


def report(out: dict, path: Path | None) -> None:
    """Print the results as JSON, and write them to `path` when given."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, required=True, help="GenzIQA file trained on the toy base")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=BASE)
    ap.add_argument("--no-niqe", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    images, mos = load_set(a.images, a.labels)
    out = {"images": len(mos), "genziqa": correlations(genziqa_scores(a.file, images, a.base), mos)}
    if not a.no_niqe:
        out["niqe"] = correlations(-niqe_scores(images), mos)
    report(out, a.json)


if __name__ == "__main__":
    main()
