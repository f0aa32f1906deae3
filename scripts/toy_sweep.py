"""The toy world's quality sweep through the real host's prompt queue, measured with real metrics.

The quality sweep example (Quality Condition at percentiles 1, 25, 50, 75 and 99, every item from the same
initial noise) runs on the built-in toy model and the toy adapter (weights/toy; scripts/workflow_fixtures.
toy_prompt), once per seed and caption. The saved images are scored with:
- the metric(s) the adapter was trained on, read from its file (toy_quality, the toy's own quality net, for
  the shipped adapter; PIQE for the earlier one);
- held out, never seen in training: pyiqa's PIQE and NIQE through the pack's metric registry (NIQE's
  parameters come from scripts/prepare_test_data.sh or pyiqa's cache; it needs 96 px blocks, so it scores
  the 64 px images upscaled bicubically to NIQE_SIZE), and one plain measure per degradation
  (toy/degradation_measures.py: sharpness, impulse share, blockiness).

With --report it also writes report.md: the paper's relative gain at p99 over the same seeds at scale 0,
per metric; how much content the target keeps (SSIM of p1, p50 and p99 from one noise, downscaled); and
whether the p99 images show their caption's subject (toy/recognize.py).

    python scripts/toy_sweep.py --seeds 8 --out out/toy/sweep            # table, grid.png, score_vs_target.png
    python scripts/toy_sweep.py --seeds 8 --captions all --report --out out/toy/sweep

tests/toy/test_toy_proof.py asserts on the same numbers; scripts/run_workflow.py (the demo) draws the same
figures for its toy run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

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
HELD_OUT_METRIC = "niqe"
NIQE_SIZE = 192  # NIQE in pyiqa 0.1.16 needs at least 96 px (metric_specs); 3x the toy's 64 px
NIQE_DIRS = (NIQE_MAT.parent,)  # where pyiqa is to look for NIQE_FILE (scripts/prepared_data.py)
TOY_METRIC = "toy_quality"  # the toy's own quality net (toy/quality_net.py)
QUALITY_NET = workflow_fixtures.TOY_WEIGHTS / "toy_quality_net.safetensors"
# Whether lower is better, for every score this script reports (pyiqa's flags for PIQE and NIQE).
LOWER_BETTER = {"piqe": True, "niqe": True, TOY_METRIC: False}
COMPARE_SIZE = 32  # content SSIM on downscaled grey images, where the degradations weigh little
PICTURE_CAPTIONS = workflow_fixtures.PICTURE_CAPTIONS


def adapter_metrics(path: Path = workflow_fixtures.TOY_WEIGHTS / workflow_fixtures.TOY_ADAPTER) -> list[str]:
    """The metrics an adapter file was trained on, from its header (the toy writes them there)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(json.loads((f.metadata() or {})["iqa_adapter"])["metrics"])


TRAINED_METRIC = adapter_metrics()[0] if workflow_fixtures.toy_ready() else TOY_METRIC


def lower_better(metric: str) -> bool:
    from toy.degradation_measures import MEASURES

    return LOWER_BETTER[metric] if metric in LOWER_BETTER else MEASURES[metric]


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
    return run_saved(server, [sweep_prompt(info, seed, scale, opts) for seed in seeds], len(TARGETS))


def run_saved(server, prompts: Sequence[dict], count: int) -> list[list[Path]]:
    """Queue each prompt (one per seed) and return the images its one Save Image saved, which must be `count`."""
    runs = []
    for k, prompt in enumerate(prompts):
        save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
        paths = server.output_images(server.run(prompt, timeout=600))[save_id]
        if len(paths) != count:
            raise RuntimeError(f"prompt {k}: {len(paths)} images saved, expected {count}")
        runs.append(list(paths))
    return runs


@contextmanager
def toy_server(out: Path) -> Iterator:
    """A started host server on a fresh toy workspace (the pack, the toy's hidden nodes, the toy adapters in
    models/iqa_adapter), logging to out/host.log; stopped and its workspace removed afterwards."""
    if not workflow_fixtures.toy_ready():
        raise SystemExit(
            f"The toy weights are missing in {workflow_fixtures.TOY_WEIGHTS}: restore them from git or "
            "run scripts/train_toy.sh"
        )
    from workflow_host import HostServer, make_workspace, remove_workspace

    out.mkdir(parents=True, exist_ok=True)
    ws = make_workspace(toy=True)
    server = HostServer(ws, log_path=out / "host.log", threads=1)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        remove_workspace(ws)


def load_images(paths: Sequence[Path]):
    """Saved PNGs as one host IMAGE batch [N, H, W, 3] in [0, 1]."""
    import torch
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays))


def score_images(
    images, metric: str, size: Union[int, tuple[int, int]] = 0, iqa_dirs: Sequence[Path] = ()
) -> np.ndarray:
    """Raw scores of a host IMAGE batch: the toy's quality net for toy_quality, else pyiqa through the pack's
    registry (never downloads); a size (a side, or height and width) resizes bicubically first."""
    import torch
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2)
    if metric == TOY_METRIC:
        from toy import quality_net

        return quality_net.quality(quality_net.predict(quality_net.load(QUALITY_NET), x.float())).double().numpy()
    from training.common.core import guidance

    model = guidance("iqa_models").build_iqa_model(metric, search_dirs=[str(d) for d in iqa_dirs])
    if size:
        hw = size if isinstance(size, tuple) else (size, size)
        x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.inference_mode():
        return model.score(x).double().numpy()


def measure(
    runs: list[list[Path]],
    held_out: bool = True,
    targets: Sequence[float] = TARGETS,
    trained: Optional[Sequence[str]] = None,
) -> dict[str, np.ndarray]:
    """{score: [runs, targets]}: the trained metric(s) first (default: the shipped adapter's), then, with
    held_out, PIQE and NIQE where not trained on, the toy's quality net where its file is here, and the
    three degradation measures."""
    from toy.degradation_measures import measure as degradation_measures

    flat = [p for run in runs for p in run]
    images = load_images(flat)
    shape = (len(runs), len(targets))
    trained = list(trained or [TRAINED_METRIC])
    names = list(trained)
    if held_out:
        names += [m for m in ("piqe", HELD_OUT_METRIC) if m not in names]
        if QUALITY_NET.is_file() and TOY_METRIC not in names:
            names.append(TOY_METRIC)
    out = {}
    for m in names:
        size, dirs = (NIQE_SIZE, NIQE_DIRS) if m == HELD_OUT_METRIC else (0, ())
        out[m] = score_images(images, m, size, dirs).reshape(shape)
    if held_out:
        out.update({k: v.reshape(shape) for k, v in degradation_measures(images.numpy()).items()})
    return out


def rounding_spread(runs: list[list[Path]], trials: int = 3, seed: int = 0) -> dict[str, float]:
    """How far each score of measure() moves when every pixel of the saved images moves by a random -1, 0 or
    +1 level of 255, far more than another CPU's float rounding changes a toy image: the largest change of
    any one image's score over `trials` draws. Tests set their margins from it."""
    import torch

    flat = [p for run in runs for p in run]
    images = load_images(flat)
    shape = (len(runs), len(runs[0]))
    base = measure(runs, targets=range(shape[1]))
    gen = torch.Generator().manual_seed(seed)
    out = {m: 0.0 for m in base}
    from toy.degradation_measures import measure as degradation_measures

    for _ in range(trials):
        noise = torch.randint(-1, 2, images.shape, generator=gen).float() / 255.0
        moved = (images * 255).round().div(255).add(noise).clamp(0, 1)
        got = {k: v.reshape(shape) for k, v in degradation_measures(moved.numpy()).items()}  # once per draw
        for m in base:
            if m in LOWER_BETTER:
                size, dirs = (NIQE_SIZE, NIQE_DIRS) if m == HELD_OUT_METRIC else (0, ())
                got[m] = score_images(moved, m, size, dirs).reshape(shape)
            out[m] = max(out[m], float(np.abs(got[m] - base[m]).max()))
    return out


def table(scores: dict[str, np.ndarray], targets: Sequence[float] = TARGETS) -> str:
    """Median scores per target over the runs, as Markdown, each with its direction."""
    lines = [
        "| score | " + " | ".join(f"p{t:g}" for t in targets) + " | last target better than first |",
        "|---|" + "---|" * (len(targets) + 1),
    ]
    for m, s in scores.items():
        low = lower_better(m)
        wins = int(((s[:, -1] < s[:, 0]) if low else (s[:, -1] > s[:, 0])).sum())
        trained = " (trained on)" if m == TRAINED_METRIC else ""
        lines.append(
            f"| {m}{trained}, {'lower' if low else 'higher'} is better, median of {s.shape[0]} | "
            + " | ".join(f"{v:.3g}" for v in np.median(s, 0))
            + f" | {wins}/{s.shape[0]} |"
        )
    return "\n".join(lines)


def relative_gain(scores: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> dict[str, float]:
    """The paper's relative gain, in percent, of the last target over the same seeds at scale 0 (where every
    target gives the same image): (mean at p99 - mean at scale 0) / |mean at scale 0|, sign-flipped for a
    lower-is-better score so that a gain is always an improvement."""
    out = {}
    for m, s in scores.items():
        ref = float(np.mean(base[m][:, -1]))
        gain = 100.0 * (float(np.mean(s[:, -1])) - ref) / abs(ref)
        out[m] = -gain if lower_better(m) else gain
    return out


def _grey_small(paths: Sequence[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(p).convert("L").resize((COMPARE_SIZE, COMPARE_SIZE), Image.BOX), np.float64) / 255
            for p in paths
        ]
    )


def content_kept(runs: list[list[Path]], targets: Sequence[float] = TARGETS) -> dict[str, np.ndarray]:
    """SSIM per run between the images of p1, p50 and p99 (one noise), grey and downscaled to COMPARE_SIZE."""
    from skimage.metrics import structural_similarity

    at = {t: i for i, t in enumerate(targets)}
    pairs = [(1, 50), (50, 99), (1, 99)]
    out = {f"p{a} vs p{b}": [] for a, b in pairs}
    for run in runs:
        g = _grey_small(run)
        for a, b in pairs:
            out[f"p{a} vs p{b}"].append(structural_similarity(g[at[a]], g[at[b]], data_range=1.0))
    return {k: np.asarray(v) for k, v in out.items()}


def subjects(runs: list[list[Path]], captions: Sequence[str], index: int = -1) -> list:
    """toy/recognize.py's nearest source photo of each run's image at `index` (default: the last target)."""
    from PIL import Image

    from toy import recognize

    return [recognize.nearest(np.asarray(Image.open(run[index]).convert("RGB")), c) for run, c in zip(runs, captions)]


def grid(paths: Sequence[Path], labels: Sequence[str], out: Path, zoom: int = 3, columns: int = 0) -> Path:
    """The images in rows of `columns` (default: one row; nearest-neighbour zoom, so pixels stay pixels) with a
    label under each."""
    from PIL import Image, ImageDraw, ImageFont

    ims = [Image.open(p).convert("RGB") for p in paths]
    columns = columns or len(ims)
    rows = (len(ims) + columns - 1) // columns
    w, h = ims[0].width * zoom, ims[0].height * zoom
    pad = 6
    text_h = 12 * max(len(label.split("\n")) for label in labels) + 6
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + text_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (im, label) in enumerate(zip(ims, labels)):
        x, y = pad + (i % columns) * (w + pad), pad + (i // columns) * (h + text_h + pad)
        sheet.paste(im.resize((w, h), Image.NEAREST), (x, y))
        for j, line in enumerate(label.split("\n")):
            draw.text((x + 2, y + h + 3 + 12 * j), line, fill=(0, 0, 0), font=font)
    sheet.save(out)
    return out


def plot(scores: dict[str, np.ndarray], out: Path, targets: Sequence[float] = TARGETS) -> Path:
    """Score against target percentile: each run thin, the median thick, one panel per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(scores), 3)
    rows = (len(scores) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(scores) :]:
        ax.axis("off")
    for ax, (m, s) in zip(axes.flat, scores.items()):
        for row in s:
            ax.plot(targets, row, color="0.75", lw=0.8)
        ax.plot(
            targets,
            np.median(s, 0),
            color="C0",
            lw=2.5,
            marker="o",
            label=f"median of {s.shape[0]} runs" if s.shape[0] > 1 else "one run",
        )
        ax.set_xlabel("target quality percentile (Quality Condition)")
        ax.set_ylabel(f"{m} ({'lower' if lower_better(m) else 'higher'} is better)")
        ax.set_xticks(list(targets))
        ax.legend(fontsize=8)
        ax.set_title(f"{m}{' (trained on)' if m == TRAINED_METRIC else ' (held out)'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def report(
    scores: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    kept: dict[str, np.ndarray],
    found: Sequence[bool],
    kept_subject: Sequence[bool],
    settings: dict,
) -> str:
    """report.md: the sweep table, the relative gain at p99 over scale 0, content kept, subjects shown."""
    gains = relative_gain(scores, base)
    lines = [
        "# The toy sweep, measured",
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "",
        table(scores),
        "",
        "## Relative gain at p99 over scale 0 (the paper's protocol; positive = better)",
        "",
        "| score | gain |",
        "|---|---|",
        *[f"| {m}{' (trained on)' if m == TRAINED_METRIC else ''} | {g:+.1f} % |" for m, g in gains.items()],
        "",
        f"## Content kept (SSIM of {COMPARE_SIZE} px grey copies, one noise; median, min over runs)",
        "",
        "| pair | median | min |",
        "|---|---|---|",
        *[f"| {k} | {np.median(v):.3f} | {v.min():.3f} |" for k, v in kept.items()],
        "",
        f"p99 images that show their caption's subject (toy/recognize.py): {sum(found)}/{len(found)}; "
        f"p99 images that show the scale-0 image's subject: {sum(kept_subject)}/{len(kept_subject)}.",
    ]
    return "\n".join(lines) + "\n"


def label(t: float, scores: dict[str, np.ndarray], run: int, i: int, names: Sequence[str]) -> str:
    """The text under one image: its target and its scores, each score once, in the order given."""
    shown = [m for m in dict.fromkeys(names) if m in scores]
    return f"target p{t:g}\n" + "\n".join(f"{m} {scores[m][run, i]:.3g}" for m in shown)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (default 8)")
    ap.add_argument("--scale", type=float, default=1.0, help="Quality Condition scale (default 1)")
    toy = workflow_fixtures.ToyOptions()
    ap.add_argument(
        "--captions",
        nargs="+",
        default=[toy.text],
        help=f"captions to sweep, or 'all' (the toy's every subject); default {toy.text!r}",
    )
    ap.add_argument("--uncond", default=toy.uncond, help=f"Quality Condition uncond (default {toy.uncond!r})")
    ap.add_argument(
        "--negative-strength", type=float, default=toy.negative_strength, help="k of -k x target (negative quality)"
    )
    ap.add_argument("--cfg", type=float, default=toy.cfg, help=f"KSampler cfg (default {toy.cfg:g})")
    ap.add_argument(
        "--adapter",
        type=Path,
        help="another adapter file to sweep (linked into the host's models/iqa_adapter; its header names the "
        f"trained metric); default weights/toy/{toy.adapter}",
    )
    ap.add_argument(
        "--picture",
        nargs="+",
        default=list(PICTURE_CAPTIONS),
        help="captions shown in grid.png, a row each, among those swept (default: the README's, "
        f"{', '.join(PICTURE_CAPTIONS)}; else the first two swept)",
    )
    ap.add_argument("--report", action="store_true", help="also sweep at scale 0 and write report.md")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "toy" / "sweep")
    ap.add_argument("--no-held-out", action="store_true", help="only the trained metric")
    args = ap.parse_args(argv)
    from toy.recognize import captions as all_captions

    captions = all_captions() if args.captions == ["all"] else args.captions
    runs, base_runs, run_captions = [], [], []
    with toy_server(args.out) as server:
        trained = [TRAINED_METRIC]
        if args.adapter:
            link = server.workspace / "models" / "iqa_adapter" / f"sweep_{args.adapter.name}"
            link.symlink_to(args.adapter.resolve())
            toy = dataclasses.replace(toy, adapter=link.name)
            trained = adapter_metrics(args.adapter)
        opts = dataclasses.replace(toy, cfg=args.cfg, uncond=args.uncond, negative_strength=args.negative_strength)
        for c in captions:
            o = dataclasses.replace(opts, text=c)
            runs += run_sweeps(server, range(args.seeds), args.scale, o)
            run_captions += [c] * args.seeds
            if args.report:
                base_runs += run_sweeps(server, range(args.seeds), 0.0, o)
        scores = measure(runs, held_out=not args.no_held_out, trained=trained)
        base = measure(base_runs, held_out=not args.no_held_out, trained=trained) if args.report else {}
        kept = content_kept(runs) if args.report else {}
        pictured = [c for c in args.picture if c in captions] or captions[:2]
        shown = [captions.index(c) * args.seeds for c in pictured]  # seed 0 of each caption
        first = []
        for k, r in enumerate(shown):
            for t, src in zip(TARGETS, runs[r]):
                first.append(args.out / f"row{k}_p{t}.png")
                first[-1].write_bytes(Path(src).read_bytes())
        found, same = [], []
        if args.report:  # each p99 image matched once: against its caption and against the scale-0 image's subject
            shown_p99, shown_base = subjects(runs, run_captions), subjects(base_runs, run_captions)
            found = [m.caption == c for m, c in zip(shown_p99, run_captions)]
            same = [a.caption == b.caption for a, b in zip(shown_p99, shown_base)]
    names = [TRAINED_METRIC, "piqe", HELD_OUT_METRIC]
    labels = [label(t, scores, r, i, names) for r in shown for i, t in enumerate(TARGETS)]
    grid(first, labels, args.out / "grid.png", columns=len(TARGETS))
    plot(scores, args.out / "score_vs_target.png")
    settings = dict(
        seeds=args.seeds,
        captions=len(captions),
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
    if args.report:
        text = report(scores, base, kept, found, same, settings)
        (args.out / "report.md").write_text(text)
        print(text)
    print(f"grid.png, score_vs_target.png and scores.npz in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
