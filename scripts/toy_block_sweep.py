"""Which blocks carry quality: the toy's p1-vs-p99 gap with one block group of the adapter on at a time.

Runs the quality sweep example on the toy (scripts/toy_sweep.py) through the real host's prompt queue with
the targets cut to p1 and p99 (one batch of two from the same initial noise) and Quality Condition's
block_weights set to one group alone ("all: 0, <group>: 1"), every group and none, per seed. Each image is
scored with the metric the toy adapter was trained on (toy_quality, higher is better), and the impulse share
(toy/degradation_measures.py, not trained on: the noise, which is what the toy adapter moves most).

    python scripts/toy_block_sweep.py --seeds 4      # a Markdown table (docs/design.md has one) and blocks.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toy_sweep  # noqa: E402

# label -> block_weights (the toy's layout: input 3, middle 0, output 2, 3 and 4, the last the pixel
# refiner's; adapter/unet_layouts.py)
CONFIGS = {
    "every block (the node's default)": "",
    "input only (`input 3`)": "all: 0, input: 1",
    "middle only (`middle 0`)": "all: 0, middle: 1",
    "output only (`output 2`, `3`, `4`)": "all: 0, output: 1",
    "`output 2` only": "all: 0, output 2: 1",
    "`output 3` only": "all: 0, output 3: 1",
    "`output 4` only (the refiner's)": "all: 0, output 4: 1",
    "none (= scale 0)": "all: 0",
}
IMPULSES = "impulse share"


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


def run(server, seeds: range) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[Path]]]:
    """({label: {score: [seeds, 2] at p1 and p99}}, {label: the saved paths of the first seed})."""
    from toy.degradation_measures import measure as degradation_measures

    info = server.object_info()
    out, first = {}, {}
    for label, weights in CONFIGS.items():
        paths = []
        for seed in seeds:
            prompt = block_prompt(info, seed, weights, label)
            save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
            saved = server.output_images(server.run(prompt, timeout=600))[save_id]
            if len(saved) != 2:
                raise RuntimeError(f"{label}, seed {seed}: {len(saved)} images saved, expected 2")
            paths += list(saved)
        images = toy_sweep.load_images(paths)
        shape = (len(seeds), 2)
        out[label] = {
            toy_sweep.TRAINED_METRIC: toy_sweep.score_images(images, toy_sweep.TRAINED_METRIC).reshape(shape),
            IMPULSES: degradation_measures(images.numpy())[IMPULSES].reshape(shape),
        }
        first[label] = paths[:2]
    return out, first


def gap(metric: str, s: np.ndarray) -> np.ndarray:
    """How much better p99 is than p1, per seed (positive: the high target looks better)."""
    return s[:, 0] - s[:, 1] if toy_sweep.lower_better(metric) else s[:, 1] - s[:, 0]


def table(scores: dict[str, dict[str, np.ndarray]]) -> str:
    """Medians at p1 and p99, the median gain of p99 over p1, and the seeds where p99 is better, per score."""
    metric = toy_sweep.TRAINED_METRIC
    lines = [
        f"| blocks on (weight 1; the rest 0) | {metric} p1 -> p99 | gain | p99 better | {IMPULSES} p1 -> p99 "
        "| p99 better |",
        "|---|---|---|---|---|---|",
    ]
    for label, by in scores.items():
        q, imp = by[metric], by[IMPULSES]
        g, gi = gap(metric, q), gap(IMPULSES, imp)
        lines.append(
            f"| {label} | {np.median(q[:, 0]):.1f} -> {np.median(q[:, 1]):.1f} | {np.median(g):+.1f} "
            f"| {int((g > 0).sum())}/{len(g)} | {np.median(imp[:, 0]):.4f} -> {np.median(imp[:, 1]):.4f} "
            f"| {int((gi > 0).sum())}/{len(gi)} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 (default 4)")
    ap.add_argument("--out", type=Path, default=toy_sweep.REPO / "out" / "toy" / "blocks")
    args = ap.parse_args(argv)
    with toy_sweep.toy_server(args.out) as server:
        scores, first = run(server, range(args.seeds))
        shown, labels = [], []
        for label, (p1, p99) in first.items():
            for target, src in (("p1", p1), ("p99", p99)):
                shown.append(args.out / f"{len(shown):02d}.png")
                shown[-1].write_bytes(Path(src).read_bytes())
                labels.append(f"{CONFIGS[label] or '(empty: every block)'}\n{target}")
    toy_sweep.grid(shown, labels, args.out / "blocks.png", columns=4)
    np.savez(args.out / "scores.npz", **{f"{k}|{m}": v for k, by in scores.items() for m, v in by.items()})
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
