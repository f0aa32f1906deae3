"""Regional quality on the toy world, measured: the Regional quality example through the real host's queue.

The example (two Quality Conditions from one adapter, each with a mask) runs on the toy model
(workflow_fixtures.toy_prompt) with its masks made exact halves: the "subject" mask is the left half,
unfeathered, and the background mask its inverse. The latent batch has two items from one noise (Latent
Batch Seed Behavior, fixed): item 0 has the high target on the left half and the low one on the right,
item 1 the reverse. So each half is seen at both targets with the same content and noise, and the
comparison is of the same half at p99 against p1, never of two different halves.

Each half is scored as a crop: the adapter's trained metric, NIQE (held out; the 64x32 crop upscaled 3x
bicubically for its 96 px blocks) and the degradation measures (toy/degradation_measures.py).

    python scripts/toy_regional.py --seeds 8 --out out/toy/regional     # table and regional.png

tests/toy/test_regional_proof.py asserts on the same numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toy_sweep  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "sdxl_regional_quality"
HIGH, LOW = 99, 1  # the targets of the two halves


def _node(prompt: dict, kind: str, **match) -> str:
    ids = [
        i
        for i, n in prompt.items()
        if n["class_type"] == kind and all(n["inputs"].get(k) == v for k, v in match.items())
    ]
    if len(ids) != 1:
        raise ValueError(f"{EXAMPLE}: expected one {kind} {match or ''}, found {len(ids)}")
    return ids[0]


def regional_prompt(object_info: dict, seed: int, opts: Optional[workflow_fixtures.ToyOptions] = None) -> dict:
    """The example on the toy for one seed: halves for masks, two items from one noise, targets swapped."""
    ui = json.loads(workflow_titles.example_path(EXAMPLE).read_text())
    opts = dataclasses.replace(opts or workflow_fixtures.ToyOptions(), seed=seed)
    p = workflow_fixtures.toy_prompt(workflow_to_api.convert(ui, object_info), opts)
    canvas, box = _node(p, "SolidMask", value=0.0), _node(p, "SolidMask", value=1.0)
    size = p[canvas]["inputs"]["width"]
    p[box]["inputs"].update(width=size // 2, height=size)
    p[_node(p, "MaskComposite")]["inputs"].update(x=0, y=0)
    p[_node(p, "FeatherMask")]["inputs"].update(left=0, top=0, right=0, bottom=0)
    subject = next(
        i for i, n in p.items() if n["class_type"] == "IQAQualityCondition" and n["inputs"]["targets"] == "99"
    )
    background = next(i for i in p if p[i]["class_type"] == "IQAQualityCondition" and i != subject)
    p[subject]["inputs"]["targets"] = f"{HIGH}; {LOW}"  # left half
    p[background]["inputs"]["targets"] = f"{LOW}; {HIGH}"  # right half
    latent = _node(p, "IQAToyEmptyLatent")
    p[latent]["inputs"]["batch_size"] = 2
    p["same_noise"] = {
        "class_type": "LatentBatchSeedBehavior",
        "inputs": {"samples": [latent, 0], "seed_behavior": "fixed"},
    }
    p[_node(p, "KSampler")]["inputs"]["latent_image"] = ["same_noise", 0]
    p[_node(p, "SaveImage")]["inputs"]["filename_prefix"] = f"toy_regional_seed{seed}"
    return p


def run(server, seeds: Sequence[int], opts: Optional[workflow_fixtures.ToyOptions] = None) -> list[list[Path]]:
    """For each seed, the two saved images (item 0: p99 left; item 1: p99 right)."""
    info = server.object_info()
    return toy_sweep.run_saved(server, [regional_prompt(info, seed, opts) for seed in seeds], 2)


def half_scores(runs: list[list[Path]], metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """{score: [seeds, half (0 left, 1 right), target (0 high, 1 low)]}, each half scored as its own crop."""
    from toy.degradation_measures import measure as degradation_measures

    images = toy_sweep.load_images([p for run in runs for p in run])  # [seeds * 2, H, W, 3], item order
    w = images.shape[2] // 2
    crops = []  # order: seed, half, target
    for s in range(len(runs)):
        item_high_left, item_high_right = images[2 * s], images[2 * s + 1]
        crops += [item_high_left[:, :w], item_high_right[:, :w], item_high_right[:, w:], item_high_left[:, w:]]
    import torch

    batch = torch.stack(crops)
    shape = (len(runs), 2, 2)
    out = {}
    for m in metrics:
        size = (3 * batch.shape[1], 3 * batch.shape[2]) if m == toy_sweep.HELD_OUT_METRIC else 0
        dirs = toy_sweep.NIQE_DIRS if m == toy_sweep.HELD_OUT_METRIC else ()
        out[m] = toy_sweep.score_images(batch, m, size, dirs).reshape(shape)
    out.update({k: v.reshape(shape) for k, v in degradation_measures(batch.numpy()).items()})
    return out


def gains(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per seed: how much better the p99 crops are than the p1 crops of the same halves (summed over both
    halves; positive = better, whatever the score's direction)."""
    out = {}
    for m, s in scores.items():
        diff = (s[:, :, 0] - s[:, :, 1]).sum(1)
        out[m] = -diff if toy_sweep.lower_better(m) else diff
    return out


def table(scores: dict[str, np.ndarray]) -> str:
    g = gains(scores)
    lines = [
        f"| score | median at p{HIGH} (both halves) | median at p{LOW} | seeds where p{HIGH} is better |",
        "|---|---|---|---|",
    ]
    for m, s in scores.items():
        lines.append(
            f"| {m}, {'lower' if toy_sweep.lower_better(m) else 'higher'} is better | {np.median(s[:, :, 0]):.3g} | "
            f"{np.median(s[:, :, 1]):.3g} | {int((g[m] > 0).sum())}/{len(g[m])} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "toy" / "regional")
    args = ap.parse_args(argv)
    with toy_sweep.toy_server(args.out) as server:
        runs = run(server, range(args.seeds))
        shown = []
        for s, run_paths in enumerate(runs[:4]):
            for k, src in enumerate(run_paths):
                shown.append(args.out / f"seed{s}_item{k}.png")
                shown[-1].write_bytes(Path(src).read_bytes())
        scores = half_scores(runs, [toy_sweep.TRAINED_METRIC, toy_sweep.HELD_OUT_METRIC])
    labels = [f"seed {i // 2}\np{HIGH} {'left' if i % 2 == 0 else 'right'}" for i in range(len(shown))]
    toy_sweep.grid(shown, labels, args.out / "regional.png", columns=4)
    np.savez(args.out / "scores.npz", **scores)
    print(table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
