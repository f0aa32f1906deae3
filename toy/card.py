"""The toy base model's model card, written from the training state it was exported from, so the numbers
in weights/toy/MODEL_CARD.md always match weights/toy/toy_base.safetensors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from .model import DEFAULT_UNET
from .sources import SOURCES

# Earlier base runs, stopped (toy/unet.py has the measurements).
HISTORY = (
    "- History: earlier runs were stopped: one for a pixel-order bug in the re-packing; one (96 channels, "
    "2000 steps) without an eps skip, whose samples stayed noise; two (64 channels, 2750 and 3000 steps, "
    "each with an adapter trained on it) with the skip at c = 1 and at c(sigma), on patches with gaussian "
    "noise. Both removed little noise at low sigma (x0 RMSE / sigma 0.60 at sigma 0.2, 0.85 at 0.05), so "
    "their samples stayed grainy at every target and the adapter moved PIQE by under 2 points. This run "
    "adds the pixel refiner and trains on impulse, not gaussian, noise (toy/unet.py, toy/patches.py)."
)


def _speed(loss_csv: Path) -> str:
    """Median and range of the logged training speed."""
    if not loss_csv.is_file():
        return "speed not logged"
    v = sorted(float(r["img_per_s"]) for r in csv.DictReader(loss_csv.open()))
    if not v:
        return "speed not logged"
    return f"median {v[len(v) // 2]:.1f} images/s, {v[0]:.1f}-{v[-1]:.1f}"


def _loss_summary(loss_csv: Path, last: int = 500) -> tuple[float | None, int]:
    """Mean per-step loss over the last `last` logged steps, and the number of rows it averages."""
    if not loss_csv.is_file():
        return None, 0
    rows = list(csv.DictReader(loss_csv.open()))
    if not rows:
        return None, 0
    end = int(rows[-1]["step"])
    tail = [float(r["loss"]) for r in rows if int(r["step"]) > end - last]
    return sum(tail) / len(tail), len(tail)


def _data_summary(data: Path) -> str:
    """Counts of the degradations in the built set, from its manifest (data.parent/<name>.csv)."""
    manifest = data.parent / f"{data.name}.csv"
    if not manifest.is_file():
        return ""
    rows = list(csv.DictReader(manifest.open()))
    on = [[float(r[k]) > 0 for k in ("blur", "noise", "jpeg")] for r in rows]
    return (
        f" In the built set ({len(rows)} patches): {sum(not any(o) for o in on)} clean, "
        f"{sum(o[0] for o in on)} blurred, {sum(o[1] for o in on)} noisy, {sum(o[2] for o in on)} JPEG, "
        f"{sum(sum(o) >= 2 for o in on)} with two or three degradations."
    )


def _run_line(run: Path, stage: str) -> tuple[str, dict, float]:
    """One training run of the adapter: its command line, settings and compute time (from run.json and loss.csv)."""

    settings = json.loads((run / "run.json").read_text())
    rows = list(csv.DictReader((run / "loss.csv").open()))
    last = rows[-1] if rows else {}
    tail = [float(r["loss"]) for r in rows[-200:]]
    head = [float(r["loss"]) for r in rows[:50]]
    init = f" --init-adapter {settings['init_adapter']}" if settings.get("init_adapter") else ""
    line = (
        f"- {stage}: `python -m training train --plugin toy --base {settings['base']} --data out/toy/patches --scores "
        f"out/toy/scores.parquet --metrics {' '.join(settings['metrics'])} --resolution {settings['resolution']} "
        f"--batch-size {settings['batch_size']} --lr {settings['lr']} --steps {last.get('step')} --seed "
        f"{settings['seed']}{init}` on {settings['world_size']} process(es) (one CPU thread each; global batch "
        f"{settings['batch_size'] * settings['world_size']}): {float(last.get('seconds', 0)) / 60:.1f} min for "
        f"{last.get('step')} steps. Loss (epsilon MSE): mean {sum(head) / max(len(head), 1):.4f} over its first "
        f"{len(head)} logged steps, {sum(tail) / max(len(tail), 1):.4f} over its last {len(tail)}."
    )
    return line, settings, float(last.get("seconds", 0))


def adapter_section(runs: list[Path], adapter: Path, sweep: Path | None = None) -> str:
    """The toy IQA-Adapter's part of the card, from its training run folder(s) (in order, if it was fine-tuned), the exported
    file and (optionally) the scores.npz of scripts/toy_sweep.py."""
    import numpy as np

    sha = hashlib.sha256(adapter.read_bytes()).hexdigest()
    stages = [_run_line(r, f"Stage {i + 1}" if len(runs) > 1 else "Training") for i, r in enumerate(runs)]
    settings = stages[-1][1]
    lines = [
        "# Toy IQA-Adapter (PIQE)",
        "",
        f"- File: `weights/toy/{adapter.name}` ({adapter.stat().st_size / 1e3:.1f} kB, fp16, sha256 `{sha[:16]}…`), "
        "the IP-Adapter flat format that Load IQA-Adapter reads, with the metadata and the training set's "
        "normalisation table in its header (so its percentiles are those of the toy patches, quality "
        "percentiles: PIQE is lower-is-better, so p99 is a low PIQE).",
        f"- Recipe (the paper's, through the pack's generic trainer): {settings['proj']} projection, "
        f"{settings['num_tokens']} quality tokens, z-scored PIQE, use_flag {settings['use_flag']}, pos_encode_L "
        f"{settings['pos_encode_L']}; dropout quality 1 %, text 5 %, both 1 %; AdamW, weight decay "
        f"{settings['weight_decay']}. The learning rate is 10x the official 1e-4, a toy-scale choice so that CPU "
        "runs of under an hour converge.",
        "- Scores: `python -m training score --data out/toy/patches --metrics piqe --size 0` (pyiqa's PIQE, no "
        "weight file, at the native 64 px).",
        *[line for line, _, _ in stages],
        f"- Export: `python -m training export --checkpoint {runs[-1]} --out weights/toy/{adapter.name} --dtype fp16`.",
    ]
    if sweep is not None and sweep.is_file():
        data = np.load(sweep)
        targets = [f"{t:g}" for t in data["targets"]]  # written by scripts/toy_sweep.py beside the scores
        run = json.loads(str(data["settings"])) if "settings" in data.files else {}
        settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in run.items() if k != "seeds")
        lines += [
            "",
            "## Measured (scripts/toy_sweep.py: the proof test's measurement)",
            "The quality sweep example on the toy through the real host's prompt queue, every target from "
            "the same noise, one run per seed; median over seeds (lower is better for both metrics; NIQE "
            "is held out, the images upscaled 3x bicubically for its 96 px blocks)"
            + (f". Settings: {settings}." if settings else ":"),
            "",
            "| metric | " + " | ".join(f"p{t}" for t in targets) + " | seeds where p99 beats p1 |",
            "|---|" + "---|" * (len(targets) + 1),
        ]
        for m in [f for f in data.files if f not in ("targets", "settings")]:
            v = data[m]
            lines.append(
                f"| {m} ({v.shape[0]} seeds) | "
                + " | ".join(f"{x:.2f}" for x in np.median(v, 0))
                + f" | {int((v[:, -1] < v[:, 0]).sum())}/{v.shape[0]} |"
            )
    return "\n".join(lines) + "\n"


def write_card(
    path: Path, state: dict, weights: Path, loss_csv: Path, still_training: bool, ema: bool = True, adapter: str = ""
) -> Path:
    args = state.get("args") or {}
    step, secs = state["step"], state.get("train_seconds", 0.0)
    mean_loss, n = _loss_summary(loss_csv)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    n_params = sum(v.numel() for k, v in state["ema"]["unet"].items()) + sum(
        v.numel() for v in state["ema"]["text"].values()
    )
    photos = "\n".join(f"| {s.name} | {s.package} `{s.file}` | {s.caption} | {s.licence} |" for s in SOURCES)
    status = (
        "**Training was still running when this file was exported**; re-export later (below) for a better model."
        if still_training
        else "Training had finished when this file was exported."
    )
    kind = (
        "EMA (decay 0.999)"
        if ema
        else "the raw weights (not the EMA, which this early still carries much of the initialisation)"
    )
    loss_line = (
        f"{state.get('loss_ema'):.4f} (exponential moving average of the per-step loss, factor 0.99); "
        f"mean of the last {n} logged steps {mean_loss:.4f}"
        if state.get("loss_ema") is not None and mean_loss is not None
        else "not logged"
    )
    text = f"""# Toy base model (IQA-Adapter toy world)

A tiny pixel-space diffusion model trained from scratch on CPU, so that the IQA-Adapter can be trained and
proven end to end without any downloaded model. It makes 64x64 RGB images of degraded photo patches, from
clean to ruined (blur, noise, JPEG).

- File: `weights/toy/toy_base.safetensors` ({weights.stat().st_size / 1e6:.2f} MB, fp16, sha256 `{sha[:16]}…`).
  Header key `iqa_toy`: the config (UNet, vocabulary, token count); `iqa_toy_training`: step and run arguments.
- Load: `toy.model.load_toy_checkpoint(path)` -> (ModelPatcher, ToyCLIP, ToyVAE), or the hidden node
  "Load Toy Checkpoint (IQA-Adapter toy)" (`toy/nodes`, mounted only by the demo and the tests). Start from
  "Empty Toy Latent (IQA-Adapter toy)" 64x64 (on upstream ComfyUI, Empty Latent Image 64x64 works too).
- Weights: {kind} of step {step}. {status}
{HISTORY}

## Model
- Denoiser: the host's own `UNetModel` (ComfyUI `openaimodel`) inside `comfy.model_base.BaseModel`, EPS
  prediction, the host's `ModelSamplingDiscrete` (SD1.5 scaled-linear schedule, 1000 steps). {n_params / 1e6:.2f}M
  parameters (UNet and text table). Config: `{DEFAULT_UNET}`.
- Latent: space-to-depth by 8 of the image in [-1, 1] (8x8x192 for 64x64); exact, no parameters (ToyVAE).
  The UNet re-packs it to 16x16x48 on entry (toy/unet.py says why) and back on exit.
- Pixel refiner: {state["config"].get("refine", 0)} channels, three 3x3 convolutions at the full 64x64 image, given the noisy
  image, the UNet's noise estimate and log sigma; it adds a correction to eps (toy/unet.py says why).
- Text: lowercased words -> a learned 64-wide embedding table plus position embeddings, 8 tokens, unknown
  words -> UNK (ToyCLIP). Vocabulary: the 13 captions below. 10 % of training captions were empty, for CFG.
- attn2 sites for the IQA-Adapter: ('input', 3, 0), ('output', 2, 0), ('output', 3, 0), ('middle', 0, 0).

## Data
64x64 patches (`python -m toy.patches --count 20000 --seed 0`): random crops of 64-256 px regions of the photos
below, area-downscaled to 64 px, randomly mirrored, flat crops rejected (grey std < 0.035 or mean gradient
< 0.012). Each patch is clean with probability 0.15, else degraded by a random non-empty subset of
{{gaussian blur sigma 0-3 px, impulse noise on 0-15 % of the pixels (black or white), JPEG quality 95-5}},
each at a uniform level 0.05-1 (impulse, not gaussian, noise: toy/patches.py says why).{_data_summary(Path(args.get("data") or "out/toy/patches"))} Captions: "a photo of <subject>".

| id | file (wheel) | caption | licence as stated by the shipping package |
|---|---|---|---|
{photos}

Packages: scikit-image 0.26.0 (`skimage/data`), matplotlib 3.11.2 (`mpl-data/sample_data`).

## Training
- `python -m toy.train_base --data {args.get("data")} --out {args.get("out")} --steps {step} --threads {args.get("threads")} --seed {args.get("seed")} --lr {args.get("lr")} --warmup {args.get("warmup")}`
  (batch {args.get("batch")}, AdamW lr {args.get("lr")} after {args.get("warmup")} warm-up steps, weight decay
  {args.get("weight_decay")}, gradient clip {args.get("clip")}, EMA {args.get("ema")}, text dropout {args.get("text_dropout")}).
- Seeds: patches 0, base 0 (weights, batch order, noise and timesteps all derive from them).
- Training time so far: {secs / 3600:.2f} h of compute on {args.get("threads")} CPU thread(s) (shared with other jobs:
  {_speed(loss_csv)}) for {step} steps ({step * int(args.get("batch") or 0)} images).
- Final loss: {loss_line}. Epsilon MSE, uniform timesteps; it starts at 1.0.

## Reproduce
- Everything from scratch: `scripts/train_toy.sh` (patches, base training, export; `TOY_BASE_STEPS={step}`
  reproduces this file's step; the learning rate is constant after warm-up, so the state at step N does
  not depend on --steps).
- Re-export from a (running) training: `python -m toy.export_base --state out/toy/base/state.pt --out
  weights/toy/toy_base.safetensors --card weights/toy/MODEL_CARD.md`.

## Limits
A toy: 13 subjects, 64x64 pixels, a few MB. It exists to show that an IQA-Adapter steers quality; its
images are not meant to look like photographs at any size.
"""
    path.write_text(text + ("\n" + adapter if adapter else ""))
    return path
