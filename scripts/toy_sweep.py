"""The toy world's quality sweep through the real host's prompt queue, measured with real metrics.

The quality sweep example (Quality Condition at percentiles 1, 25, 50, 75 and 99, every item from the same
initial noise) runs on the built-in toy model and the toy adapter (weights/toy; scripts/workflow_fixtures.
toy_prompt), once per seed. The saved images are scored here with pyiqa through the pack's own metric
registry: PIQE, the metric the adapter was trained on, and NIQE, held out (not used in training; its
parameters come from scripts/prepare_test_data.sh or pyiqa's cache). NIQE needs 96 px blocks, so it scores
the 64 px images upscaled bicubically to NIQE_SIZE.

    python scripts/toy_sweep.py --seeds 8 --out out/toy/sweep      # table, grid.png, score_vs_target.png

tests/toy/test_toy_proof.py asserts on the same numbers; scripts/run_workflow.py (the demo) draws the same
figures for its toy run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

# The repository root, for training.common.core (the pack's metric registry) when this runs as a script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402
from prepared_data import NIQE_FILE, NIQE_MAT  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGETS = (1, 25, 50, 75, 99)  # the sweep example's targets (quality percentiles)
SWEEP = "sdxl_quality_sweep"
TRAINED_METRIC = "piqe"
HELD_OUT_METRIC = "niqe"
NIQE_SIZE = 192  # NIQE in pyiqa 0.1.16 needs at least 96 px (metric_specs); 3x the toy's 64 px
NIQE_DIRS = (NIQE_MAT.parent,)  # where pyiqa is to look for NIQE_FILE (scripts/prepared_data.py)


def niqe_available() -> bool:
    return any((d / NIQE_FILE).is_file() for d in NIQE_DIRS)


def sweep_prompt(
    object_info: dict,
    seed: int,
    scale: float = 1.0,
    opts: Optional[workflow_fixtures.ToyOptions] = None,
) -> dict:
    """The sweep example on the toy for one seed and adapter scale, without its score branch (scored here)."""
    ui = json.loads(workflow_titles.example_path(SWEEP).read_text())
    opts = dataclasses.replace(opts or workflow_fixtures.ToyOptions(), seed=seed)
    prompt = workflow_fixtures.toy_prompt(workflow_to_api.convert(ui, object_info), opts)
    for node_id in [i for i, n in prompt.items() if n["class_type"] in ("IQAScore", "PreviewImage", "IQALoadModel")]:
        del prompt[node_id]
    for node in prompt.values():
        if node["class_type"] == "IQAQualityCondition":
            node["inputs"]["scale"] = scale
            assert [int(t) for t in workflow_fixtures.target_items(node["inputs"])] == list(TARGETS), node["inputs"][
                "targets"
            ]
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = f"toy_sweep_seed{seed}_scale{scale:g}"
    return prompt


def run_sweeps(
    server,
    seeds: Sequence[int],
    scale: float = 1.0,
    opts: Optional[workflow_fixtures.ToyOptions] = None,
) -> list[list[Path]]:
    """For each seed, the five saved images (in target order) of one sweep on the server."""
    info = server.object_info()
    runs = []
    for seed in seeds:
        prompt = sweep_prompt(info, seed, scale, opts)
        save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
        paths = server.output_images(server.run(prompt, timeout=600))[save_id]
        if len(paths) != len(TARGETS):
            raise RuntimeError(f"seed {seed}: {len(paths)} images saved, expected {len(TARGETS)}")
        runs.append(list(paths))
    return runs


def load_images(paths: Sequence[Path]):
    """Saved PNGs as one host IMAGE batch [N, H, W, 3] in [0, 1]."""
    import torch
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays))


def score_images(images, metric: str, size: int = 0, iqa_dirs: Sequence[Path] = ()) -> np.ndarray:
    """Raw pyiqa scores through the pack's registry (never downloads); size > 0 resizes bicubically first."""
    import torch
    import torch.nn.functional as F

    from training.common.core import guidance

    model = guidance("iqa_models").build_iqa_model(metric, search_dirs=[str(d) for d in iqa_dirs])
    x = images.permute(0, 3, 1, 2)
    if size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.inference_mode():
        return model.score(x).double().numpy()


def measure(runs: list[list[Path]], held_out: bool = True, targets: Sequence[float] = TARGETS) -> dict[str, np.ndarray]:
    """{metric: [seeds, targets] raw scores} for the trained metric and (held_out) NIQE."""
    flat = [p for run in runs for p in run]
    images = load_images(flat)
    shape = (len(runs), len(targets))
    out = {TRAINED_METRIC: score_images(images, TRAINED_METRIC).reshape(shape)}
    if held_out:
        out[HELD_OUT_METRIC] = score_images(images, HELD_OUT_METRIC, NIQE_SIZE, NIQE_DIRS).reshape(shape)
    return out


def table(scores: dict[str, np.ndarray], targets: Sequence[float] = TARGETS) -> str:
    """Median scores per target over the seeds, as Markdown; both metrics are lower-is-better."""
    lines = [
        "| metric (lower is better) | " + " | ".join(f"p{t:g}" for t in targets) + " | last target better than first |",
        "|---|" + "---|" * (len(targets) + 1),
    ]
    for m, s in scores.items():
        wins = int((s[:, -1] < s[:, 0]).sum())
        lines.append(
            f"| {m} median of {s.shape[0]} seeds | "
            + " | ".join(f"{v:.2f}" for v in np.median(s, 0))
            + f" | {wins}/{s.shape[0]} seeds |"
        )
    return "\n".join(lines)


def grid(paths: Sequence[Path], labels: Sequence[str], out: Path, zoom: int = 3) -> Path:
    """The images side by side (nearest-neighbour zoom, so pixels stay pixels) with a label under each."""
    from PIL import Image, ImageDraw, ImageFont

    ims = [Image.open(p).convert("RGB") for p in paths]
    w, h = ims[0].width * zoom, ims[0].height * zoom
    pad, text_h = 6, 30
    sheet = Image.new("RGB", (len(ims) * (w + pad) + pad, h + text_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (im, label) in enumerate(zip(ims, labels)):
        x = pad + i * (w + pad)
        sheet.paste(im.resize((w, h), Image.NEAREST), (x, pad))
        for j, line in enumerate(label.split("\n")):
            draw.text((x + 2, pad + h + 3 + 12 * j), line, fill=(0, 0, 0), font=font)
    sheet.save(out)
    return out


def plot(scores: dict[str, np.ndarray], out: Path, targets: Sequence[float] = TARGETS) -> Path:
    """Score against target percentile: each seed thin, the median thick, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.4), squeeze=False)
    for ax, (m, s) in zip(axes[0], scores.items()):
        for row in s:
            ax.plot(targets, row, color="0.75", lw=0.8)
        ax.plot(
            targets,
            np.median(s, 0),
            color="C0",
            lw=2.5,
            marker="o",
            label=f"median of {s.shape[0]} seeds" if s.shape[0] > 1 else "one seed",
        )
        ax.set_xlabel("target quality percentile (Quality Condition)")
        ax.set_ylabel(f"{m} of the image (lower is better)")
        ax.set_xticks(list(targets))
        ax.legend(fontsize=8)
        ax.set_title(f"{m}{' (trained on)' if m == TRAINED_METRIC else ' (held out)'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (default 8)")
    ap.add_argument("--scale", type=float, default=1.0, help="Quality Condition scale (default 1)")
    toy = workflow_fixtures.ToyOptions()
    ap.add_argument("--uncond", default=toy.uncond, help=f"Quality Condition uncond (default {toy.uncond!r})")
    ap.add_argument(
        "--negative-strength", type=float, default=toy.negative_strength, help="k of -k x target (negative quality)"
    )
    ap.add_argument("--cfg", type=float, default=toy.cfg, help=f"KSampler cfg (default {toy.cfg:g})")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "toy" / "sweep")
    ap.add_argument("--no-held-out", action="store_true", help="skip NIQE")
    args = ap.parse_args(argv)
    if not workflow_fixtures.toy_ready():
        raise SystemExit(
            f"The toy weights are missing in {workflow_fixtures.TOY_WEIGHTS}: restore them from git or "
            "run scripts/train_toy.sh"
        )
    from workflow_host import HostServer, make_workspace, remove_workspace

    args.out.mkdir(parents=True, exist_ok=True)
    ws = make_workspace(toy=True)
    server = HostServer(ws, log_path=args.out / "host.log", threads=1)
    try:
        server.start()
        opts = dataclasses.replace(toy, cfg=args.cfg, uncond=args.uncond, negative_strength=args.negative_strength)
        runs = run_sweeps(server, range(args.seeds), args.scale, opts)
        scores = measure(runs, held_out=not args.no_held_out)
        first = [args.out / f"seed0_p{t}.png" for t in TARGETS]
        for src, dst in zip(runs[0], first):
            dst.write_bytes(Path(src).read_bytes())
    finally:
        server.stop()
        remove_workspace(ws)
    labels = [
        f"target p{t}\n" + ", ".join(f"{m} {s[0, i]:.1f}" for m, s in scores.items()) for i, t in enumerate(TARGETS)
    ]
    grid(first, labels, args.out / "grid.png")
    plot(scores, args.out / "score_vs_target.png")
    settings = dict(
        seeds=args.seeds,
        scale=args.scale,
        steps=opts.steps,
        cfg=opts.cfg,
        sampler=f"{opts.sampler_name} {opts.scheduler}",
        uncond=opts.uncond,
        negative_strength=opts.negative_strength,
    )
    np.savez(  # read by toy/card.py
        args.out / "scores.npz", targets=np.asarray(TARGETS, dtype=float), settings=json.dumps(settings), **scores
    )
    print(table(scores))
    print(f"grid.png, score_vs_target.png and scores.npz in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
