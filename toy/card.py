"""The toy world's model card (weights/toy/MODEL_CARD.md), written from what the runs left behind, so that
every number in it matches the shipped files: the base's training state, the quality net's header, the
adapter's and GenzIQA's run folders, the sweep (scripts/toy_sweep.py), the recognizability check
(toy.recognize --json) and the stage times of scripts/train_toy.sh.

    python -m toy.card --work out/toy --weights weights/toy --out weights/toy/MODEL_CARD.md
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path
from typing import Optional

from .model import DEFAULT_UNET
from .patches import BLUR_SIGMA_MAX, FRAME, IMPULSE_MAX, JPEG_QUALITY, P_CLEAN, SIZE
from .sources import SOURCES

BASE, NET, ADAPTER, REFERENCE, GENZIQA = (
    "toy_base.safetensors",
    "toy_quality_net.safetensors",
    "toy_adapter_quality.safetensors",
    "toy_adapter_reference.safetensors",
    "toy_genziqa.safetensors",
)


def _file_line(path: Path, what: str) -> str:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"| `{path.name}` | {path.stat().st_size / 1e6:.2f} MB | `{sha[:16]}` | {what} |"


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def _loss_ends(rows: list[dict], window: int) -> tuple[float, float]:
    """Mean logged loss over the first and the last `window` rows."""
    head, tail = [float(r["loss"]) for r in rows[:window]], [float(r["loss"]) for r in rows[-window:]]
    return sum(head) / max(len(head), 1), sum(tail) / max(len(tail), 1)


def _json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_times(path: Path) -> dict[str, float]:
    """scripts/train_toy.sh's "train_toy: <stage> took N s" lines, summed per stage over resumed runs."""
    out: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("train_toy: ") and " took " in line and line.endswith(" s"):
                stage, secs = line[len("train_toy: ") :].rsplit(" took ", 1)
                out[stage] = out.get(stage, 0.0) + float(secs[:-2])
    return out


def header(weights: Path, times: dict[str, float]) -> list[str]:
    files = [
        (BASE, "the base: a 64 px diffusion model of the photos below, with a word-table text encoder"),
        (NET, "the toy's own IQA metric, `toy_quality`: reads blur, impulse noise and JPEG levels"),
        (ADAPTER, "the IQA-Adapter on `toy_quality`, trained on the base"),
        (REFERENCE, "the reference adapter for Reference Quality Transfer, on the quality net's embedding"),
        (GENZIQA, "a GenzIQA file for the base, trained on degradation labels"),
    ]
    total = sum(times.values())
    took = (
        f" The stages that made these files took {total / 60:.0f} min on the project's 2-core machine, some "
        "sharing it with other jobs (" + ", ".join(f"{k} {v / 60:.0f} min" for k, v in times.items()) + ")."
        if times
        else ""
    )
    return [
        "# The toy world",
        "",
        "Everything here was trained by this project's code, on CPU, from photos that ship inside Python wheels,",
        "so that the IQA-Adapter can be trained, proven and shown end to end with no downloaded model. It is a",
        "toy: 64x64 pixels, 12 photos, a few MB. Retrain it all with `scripts/train_toy.sh` (deterministic from",
        f"its seeds up to the CPU's float rounding; every stage resumes).{took}",
        "",
        "| file | size | sha256 | what |",
        "|---|---|---|---|",
        *[_file_line(weights / f, what) for f, what in files if (weights / f).is_file()],
        "",
        "## Photos",
        "",
        "| id | file (wheel) | caption | licence as stated by the shipping package |",
        "|---|---|---|---|",
        *[f"| {s.name} | {s.package} `{s.file}` | {s.caption} | {s.licence} |" for s in SOURCES],
        "",
        "## Pictures",
        "",
        f"`python -m toy.patches --count N --seed S`: each picture frames most of one photo (a square of "
        f"{FRAME[0]:.0%}-{FRAME[1]:.0%} of its short side at a random place, area-downscaled to {SIZE} px, mirrored "
        f'half the time), captioned "a photo of <subject>". It is clean with probability {P_CLEAN:g}; else a '
        "severity s ~ U(0, 1) and a non-empty random subset of the degradations, one at level s and the others at "
        f"s x U(0.5, 1): gaussian blur (sigma up to {BLUR_SIGMA_MAX:g} px), impulse noise (up to {IMPULSE_MAX:.0%} "
        f"of the pixels set black or white) and JPEG (quality {JPEG_QUALITY[0]} down to {JPEG_QUALITY[1]}). So "
        "1 - s, the quality label, is uniform from ruined to clean.",
    ]


def base_section(state: dict, loss_csv: Path, recognized: Optional[dict]) -> list[str]:
    args = state.get("args") or {}
    step, secs = state["step"], state.get("train_seconds", 0.0)
    rows = _rows(loss_csv)
    first, last = _loss_ends(rows, 4) if rows else (float("nan"), float("nan"))
    rec = (
        f"- Recognizable: {recognized['recognized']}/{recognized['total']} samples "
        f"({recognized['recognized'] / recognized['total']:.0%}; {recognized['seeds']} seeds per caption, "
        f"{recognized['steps']} Euler steps, cfg {recognized['cfg']:g}, no adapter) are closest, by SSIM of 32 px "
        "grey copies, to a framing of their own caption's photo (`python -m toy.recognize --seeds "
        f"{recognized['seeds']} --json ...`; per caption: "
        + ", ".join(f"{c.removeprefix('a photo of ')} {n}" for c, n in recognized["per_caption"].items())
        + "). It learns these photos by heart, which is what a toy needs: a subject a person can recognise."
        if recognized
        else "- Recognizability: not measured for this file."
    )
    return [
        "",
        "# Toy base model",
        "",
        "- Denoiser: the host's own `UNetModel` (ComfyUI `openaimodel`) inside `comfy.model_base.BaseModel`, EPS",
        "  prediction, the host's `ModelSamplingDiscrete` (SD1.5 scaled-linear schedule), a pixel refiner on the",
        f"  full image (toy/unet.py). Config: `{DEFAULT_UNET}`, refiner {state['config'].get('refine', 0)} channels.",
        "- Latent: space-to-depth by 8 of the image in [-1, 1] (ToyVAE, exact, no parameters). Text: a learned",
        "  word table (ToyCLIP) over the captions' words; 10 % of training captions empty, for CFG.",
        '- Load: the hidden node "Load Toy Checkpoint (IQA-Adapter toy)" (`toy/nodes`, mounted by the demo and',
        "  the tests), or `toy.model.load_toy_checkpoint(path)`.",
        f"- Training: `python -m toy.train_base --data {args.get('data')} --steps {step} --seed {args.get('seed')} "
        f"--threads {args.get('threads')}` (batch {args.get('batch')}, AdamW lr {args.get('lr')}, "
        f"{args.get('warmup')} warm-up steps, EMA {args.get('ema')}; exported: the EMA weights in fp16): "
        f"{secs / 3600:.2f} h of compute for {step} steps ({step * int(args.get('batch') or 0)} pictures).",
        f"- Loss (epsilon MSE, logged every 50 steps): {first:.4f} over the first 4 logs, {last:.4f} over the last 4.",
        rec,
    ]


def refiner_section(state: dict, loss_csv: Path) -> list[str]:
    """The base's second run: the refiner's cross-attention added and the refiner trained alone."""
    args, cfg = state.get("args") or {}, state["config"]
    rows = _rows(loss_csv)
    first, last = _loss_ends(rows, 4) if rows else (float("nan"), float("nan"))
    return [
        f"- Then the refiner's cross-attention (width {cfg.get('refine_attention')}, the fifth attn2 site, "
        "`('output', 4, 0)`): `python -m toy.train_base --init <the first run's export> --refine-attention "
        f"{cfg.get('refine_attention')} --train refiner --steps {state['step']} --lr {args.get('lr')} --ema "
        f"{args.get('ema')}`: the UNet and word table frozen, the refiner alone trained, "
        f"{state.get('train_seconds', 0.0) / 60:.0f} min; loss {first:.4f} over its first 4 logs, {last:.4f} "
        "over the last 4. The block starts as an exact no-op, so the base draws what the first run drew; it "
        "exists so that the pixel-level look has a layer the adapter patches.",
    ]


def net_section(net: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(net), "pt") as f:
        meta = json.loads((f.metadata() or {})["toy_quality_net"])
    srcc, (first, last) = meta["val_srcc"], meta["loss_first_last"]
    return [
        "",
        "# Toy quality net (`toy_quality`)",
        "",
        "A small CNN (toy/quality_net.py) that reads the three degradation levels of a 64 px toy picture;",
        "`toy_quality` = 100 x (1 - the largest level), higher is better. The offline pyiqa metrics are blind to",
        "part of the toy's degradations at 64 px (PIQE against the level on single-degradation pictures: blur SRCC",
        "0.79, noise 0.71, JPEG -0.10), so the adapter trains on this one, and PIQE and NIQE stay held out.",
        f"- Training: `python -m toy.quality_net train --steps {meta['steps']}` (width {meta['width']}, seed "
        f"{meta['seed']}) on its own pictures (`{meta['train_pictures']}`), validated on `{meta['val_pictures']}`: "
        f"{meta['train_seconds'] / 60:.0f} min; loss (MSE of the levels) {first:.4f} over the first "
        f"{meta['loss_window']} steps, {last:.4f} over the last.",
        f"- Validation SRCC against the true level: blur {srcc['blur']:.3f}, noise {srcc['noise']:.3f}, JPEG "
        f"{srcc['jpeg']:.3f}; `toy_quality` against 1 - the largest level {srcc['toy_quality']:.3f}.",
    ]


def adapter_section(run: Path, sweep: Path, continued: Optional[Path] = None) -> list[str]:
    settings = json.loads((run / "run.json").read_text())
    rows = _rows(run / "loss.csv")
    first, last = _loss_ends(rows, 50)
    steps, secs = rows[-1]["step"], float(rows[-1]["seconds"])
    flag = " --use-flag" if settings.get("use_flag") else ""
    grown = continued is not None and (continued / "run.json").is_file()
    first_base = "out/toy/base_stage1.safetensors" if grown else f"weights/toy/{BASE}"  # train_toy.sh's names
    lines = [
        "",
        "# Toy IQA-Adapter (`toy_quality`)",
        "",
        "The paper's recipe through the pack's generic trainer: "
        f"{settings['proj']} projection, {settings['num_tokens']} quality tokens, the z-scored `toy_quality` of "
        f"every training picture, use_flag {settings['use_flag']} (the official script's default), dropout of "
        "the quality vector 1 %, of the text 5 %, of both 1 %; AdamW. The header holds the metadata and the "
        "pictures' score table, so its percentiles are those of the toy pictures.",
        f"- Training: `python -m training train --plugin toy --base {first_base} --data out/toy/patches "
        f"--scores out/toy/scores.parquet --metrics {' '.join(settings['metrics'])}{flag} --resolution "
        f"{settings['resolution']} --batch-size {settings['batch_size']} --lr {settings['lr']} --steps {steps} "
        f"--seed {settings['seed']}` on {settings['world_size']} processes (global batch "
        f"{settings['batch_size'] * settings['world_size']}): {secs / 60:.0f} min. The learning rate is 10x the "
        "official 1e-4, so that a CPU run of under an hour converges.",
        f"- Loss (epsilon MSE): {first:.4f} over the first 50 logged steps, {last:.4f} over the last 50.",
    ]
    if grown:
        rows = _rows(continued / "loss.csv")
        first, last = _loss_ends(rows, 50)
        lines.append(
            f"- Then continued on the final base (with the refiner's attention): the same command with --base "
            f"weights/toy/{BASE} --init-adapter out/toy/adapter_stage1.safetensors --steps {rows[-1]['step']}, the fifth "
            "layer starting as a copy of the refiner's to_k/to_v as new layers do: "
            f"{float(rows[-1]['seconds']) / 60:.0f} min; loss {first:.4f} over its first 50 logged steps, "
            f"{last:.4f} over the last 50. This run is the one that steers the pixel-level look; the first "
            "moved `toy_quality` by 3.5 points from p1 to p99 (docs/training.md)."
        )
    report = sweep / "report.md"
    if report.is_file():
        body = report.read_text().split("\n", 1)[1].strip()  # without its own title
        lines += ["", "## Measured (scripts/toy_sweep.py --report, through the real host's prompt queue)", "", body]
    return lines


def reference_section(run: Path, proof: Path) -> list[str]:
    settings = json.loads((run / "run.json").read_text())
    rows = _rows(run / "loss.csv")
    first, last = _loss_ends(rows, 50)
    steps, secs = rows[-1]["step"], float(rows[-1]["seconds"])
    lines = [
        "",
        "# Toy reference adapter (Reference Quality Transfer)",
        "",
        "The paper's reference scenario: each training picture conditioned on its own embedding by "
        "`toy_quality_embedding_spec.json` (the quality net's last stage, mean and standard deviation over "
        "positions: 192 values), computed once by `python -m training embed --plugin toy --spec "
        "weights/toy/toy_quality_embedding_spec.json --resolution 64 --data out/toy/patches`. The same recipe, "
        "dropout and tokens as the quality adapter; the header holds `kind: reference` and the spec.",
        f"- Training: `python -m training train --kind reference --embeddings out/toy/embeddings.parquet --plugin "
        f"toy --base weights/toy/{BASE} --data out/toy/patches --resolution {settings['resolution']} --batch-size "
        f"{settings['batch_size']} --lr {settings['lr']} --steps {steps} --seed {settings['seed']}` on "
        f"{settings['world_size']} processes, from scratch: {secs / 60:.0f} min.",
        f"- Loss (epsilon MSE): {first:.4f} over the first 50 logged steps, {last:.4f} over the last 50.",
    ]
    if proof.is_file():
        lines += [
            "",
            "## Measured (scripts/toy_reference.py, through the real host's prompt queue)",
            "",
            proof.read_text().strip(),
        ]
    return lines


def genziqa_section(work: Path) -> list[str]:
    run = work / "genziqa" / "run"
    settings = _json(run / "run.json") or {}
    test = _json(work / "genziqa" / "test.json")
    vals = sorted(
        ((int(p.stem[3:]), json.loads(p.read_text())) for p in (work / "genziqa").glob("val*.json")),
        key=lambda v: v[0],
    )
    rows = _rows(run / "loss.csv")
    lines = [
        "",
        "# Toy GenzIQA (degradation labels)",
        "",
        "A GenzIQA file (docs/genziqa.md) trained on the toy base, labels MOS = 100 x (1 - the largest "
        "degradation level): pictures `python -m toy.genziqa_data` at seed 0 (4000, training), 1 (300, "
        "validation: it chose the number of steps) and 2 (300, test: no choice has seen it).",
    ]
    if settings:
        lines.append(
            f"- Training: `python -m training genziqa-train --plugin toy --base weights/toy/{BASE} --steps N "
            f"--batch-size {settings.get('batch_size')} --resolution {settings.get('resolution')} --lr "
            f'{settings.get("lr")} --max-timestep {settings.get("max_timestep")} --prompts "a photo" "of"` '
            '(the toy\'s vocabulary has no "good" or "bad"), one run exported at each step budget.'
        )
        base = Path(str(settings.get("base", ""))).name
        if base and base != BASE:
            lines.append(
                f"- Trained on `{base}`, the base before its refiner's cross-attention was added (the same UNet "
                "and word table; only the refiner differs, which its noise term reads): on the shipped base each step "
                "costs three times as much. The figures below are measured on the shipped base."
            )
    if rows:
        first, last = _loss_ends(rows, 100)
        lines.append(
            f"- Loss (MSE against the standardised MOS): {first:.3f} over the first 100 logged steps, {last:.3f} "
            f"over the last 100; {float(rows[-1]['seconds']) / 60:.0f} min for {rows[-1]['step']} steps."
        )
    if vals:
        best = max(vals, key=lambda v: v[1]["genziqa"]["srcc"])
        lines.append(
            "- Validation SRCC by steps: "
            + ", ".join(f"{s}: {v['genziqa']['srcc']:.3f}" for s, v in vals)
            + f"; shipped: {best[0]} steps."
        )
    if test:
        niqe = f"; NIQE on the same labels SRCC {test['niqe']['srcc']:.3f}" if "niqe" in test else ""
        lines.append(
            f"- Test ({test['images']} pictures, seed 2): SRCC {test['genziqa']['srcc']:.3f}, PLCC "
            f"{test['genziqa']['plcc']:.3f}{niqe} (`scripts/genziqa_toy_eval.py`). The goal was SRCC >= 0.8."
        )
    return lines


def build_card(work: Path, weights: Path) -> str:
    import torch

    times = stage_times(work / "times.txt")
    state = torch.load(work / "base" / "state.pt", map_location="cpu", weights_only=False)
    lines = header(weights, times)
    lines += base_section(state, work / "base" / "loss.csv", _json(work / "recognize.json"))
    if (work / "base_refiner" / "state.pt").is_file():
        refined = torch.load(work / "base_refiner" / "state.pt", map_location="cpu", weights_only=False)
        lines += refiner_section(refined, work / "base_refiner" / "loss.csv")
    if (weights / NET).is_file():
        lines += net_section(weights / NET)
    if (work / "adapter" / "run.json").is_file():
        lines += adapter_section(work / "adapter", work / "sweep", work / "adapter_refiner")
    if (work / "reference" / "run.json").is_file():
        lines += reference_section(work / "reference", work / "reference_sheet" / "proof.md")
    lines += genziqa_section(work)
    lines += [
        "",
        "# Limits",
        "",
        "A toy: 12 subjects at 64x64 pixels, learned by heart. It exists to show, in pictures a person can read",
        "and numbers a test can check, that an IQA-Adapter steers quality; its pictures are not photographs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.card", description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("out/toy"), help="scripts/train_toy.sh's TOY_OUT")
    ap.add_argument("--weights", type=Path, default=Path("weights/toy"))
    ap.add_argument("--out", type=Path, default=Path("weights/toy/MODEL_CARD.md"))
    a = ap.parse_args(argv)
    a.out.write_text(build_card(a.work, a.weights))
    print(a.out)


if __name__ == "__main__":
    main()
