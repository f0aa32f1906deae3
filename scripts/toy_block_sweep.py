"""Which blocks carry quality: the toy's p1-vs-p99 gap with one block group of the adapter on at a time.

Runs the quality sweep example on the toy (scripts/toy_sweep.py) through the real host's prompt queue with
the targets cut to p1 and p99 (one batch of two from the same initial noise) and Quality Condition's
block_weights set to one group alone ("all: 0, <group>: 1"), every group and none, per seed. Each image is
scored with PIQE, the metric the toy adapter was trained on (lower is better).

    python scripts/toy_block_sweep.py --seeds 4      # a Markdown table (docs/design.md has one)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toy_sweep  # noqa: E402

# label -> block_weights (the toy's layout: input 3, middle 0, output 2 and 3; adapter/unet_layouts.py)
CONFIGS = {
    "every block (the node's default)": "",
    "input only (input 3)": "all: 0, input: 1",
    "middle only (middle 0)": "all: 0, middle: 1",
    "output only (output 2, 3)": "all: 0, output: 1",
    "output 2 only": "all: 0, output 2: 1",
    "output 3 only": "all: 0, output 3: 1",
    "none (= scale 0)": "all: 0",
}


def block_prompt(info: dict, seed: int, block_weights: str, label: str) -> dict:
    """The toy sweep for one seed at targets p1 and p99 with these block weights."""
    prompt = toy_sweep.sweep_prompt(info, seed)
    for node in prompt.values():
        if node["class_type"] == "IQAQualityCondition":
            node["inputs"].update(targets="1; 99", block_weights=block_weights)
        elif "batch_size" in node["inputs"]:
            node["inputs"]["batch_size"] = 2
        elif node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = f"toy_blocks_{abs(hash(label)) % 10**6}_seed{seed}"
    return prompt


def run(server, seeds: range) -> dict[str, np.ndarray]:
    """{label: [seeds, 2] PIQE of p1 and p99}."""
    info = server.object_info()
    out = {}
    for label, weights in CONFIGS.items():
        paths = []
        for seed in seeds:
            prompt = block_prompt(info, seed, weights, label)
            save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
            saved = server.output_images(server.run(prompt, timeout=600))[save_id]
            if len(saved) != 2:
                raise RuntimeError(f"{label}, seed {seed}: {len(saved)} images saved, expected 2")
            paths += list(saved)
        scores = toy_sweep.score_images(toy_sweep.load_images(paths), toy_sweep.TRAINED_METRIC)
        out[label] = scores.reshape(len(seeds), 2)
    return out


def table(scores: dict[str, np.ndarray]) -> str:
    """Median PIQE at p1 and p99, the median gap p1 - p99 (positive: the high target looks better) and wins."""
    lines = [
        "| blocks on (weight 1; the rest 0) | PIQE at p1 | PIQE at p99 | gap p1 - p99 | p99 better |",
        "|---|---|---|---|---|",
    ]
    for label, s in scores.items():
        gap = s[:, 0] - s[:, 1]
        lines.append(
            f"| {label} | {np.median(s[:, 0]):.1f} | {np.median(s[:, 1]):.1f} | {np.median(gap):+.1f} "
            f"| {int((gap > 0).sum())}/{len(gap)} seeds |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 (default 4)")
    ap.add_argument("--out", type=Path, default=toy_sweep.REPO / "out" / "toy" / "blocks")
    args = ap.parse_args(argv)
    with toy_sweep.toy_server(args.out) as server:
        scores = run(server, range(args.seeds))
    np.savez(args.out / "scores.npz", **{k: v for k, v in scores.items()})
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
