"""`python -m training genziqa-train`: train a GenzIQA file (docs/genziqa.md) on images and their MOS.

The authors' recipe: a frozen SD-family model (UNet, VAE, CLIP); trained are the 16 context vectors of the
antonym prompts and a rank-4 LoRA on every attn2 layer's to_q/to_k/to_v/to_out.0, starting from a fresh
file (fresh.py). Each image gets one timestep t ~ U{0..99} and one noise, shared by both prompts; the loss
is the MSE of the raw score, less the untrained file's mean raw score (raw_offset), against the MOS
standardised over the label file ((MOS - mean) / std). The exported file carries the calibration
(a, b) = (std, mean - std * offset), so Load GenzIQA's scores are on the MOS scale.
AdamW; gradient accumulation, mixed precision and DDP from accelerate, as `train`.

Checkpoints (out/checkpoints/step-NNNNNN/) hold accelerate's state and state.json as `train` writes them;
--resume continues where the run stopped (each sample's timestep and noise are a function of the seed and
its stream position, training/common/draws.py). The run ends by writing the GenzIQA file (--export, default
out/genziqa.safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch

from training.common.base_formats import add_plugin_argument
from training.common.errors import TrainingError

OFFSET_IMAGES = 32  # images the untrained raw score's offset is measured on
TRAIN_TIMESTEPS = 100  # t ~ U{0..99}, the authors' training draw
RESUME_KEYS = (
    "labels",
    "family",
    "resolution",
    "batch_size",
    "grad_accum",
    "seed",
    "world_size",
    "lora_rank",
    "max_timestep",
    "pooling_lambda",
    "attention_term",
    "prompts",
)


def recorded_defaults() -> dict[str, Any]:
    """The defaults of the settings a run records that the file format also defaults (GenzIQAMeta's, the
    authors'), by setting name; a checkpoint from before an option existed was trained with its default."""
    import dataclasses

    from training.common.core import guidance

    fields = {f.name: f.default for f in dataclasses.fields(guidance("genziqa.file_format").GenzIQAMeta)}
    return {
        "max_timestep": TRAIN_TIMESTEPS,
        "pooling_lambda": fields["pooling_lambda"],
        "attention_term": fields["attention_term"],
        "prompts": list(fields["prompts"]),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--base", required=True, help="single-file base checkpoint (SD1.5, SD2.x or SDXL, epsilon)")
    g.add_argument("--images", required=True, help="image folder; the label file's names are relative to it")
    g.add_argument(
        "--labels",
        required=True,
        help="CSV in pyiqa's meta format: image file name, MOS[, ...]; a header row is allowed",
    )
    g.add_argument("--family", choices=("sd1", "sd2", "sdxl", "toy"), help="model family (default: from the UNet)")
    g.add_argument(
        "--comfyui-dir", help="an upstream ComfyUI folder to import the host from (default: the installed one)"
    )
    add_plugin_argument(g)
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--resolution",
        type=int,
        default=512,
        help="square resize before the VAE (default 512, the authors'; 0: native)",
    )
    o.add_argument("--batch-size", type=int, default=1, help="images per process per micro-batch (authors: 1)")
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    n = o.add_mutually_exclusive_group(required=True)
    n.add_argument("--steps", type=int, help="optimizer steps to train to (total, counting resumed ones)")
    n.add_argument("--epochs", type=float, help="passes over the label file (converted to steps)")
    o.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, the authors')")
    o.add_argument("--weight-decay", type=float, default=1e-2)
    o.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4, the authors')")
    o.add_argument(
        "--max-timestep",
        type=int,
        default=TRAIN_TIMESTEPS,
        help="train on t ~ U{0..N-1} and score at the authors' 8 timesteps scaled by N/100 (default 100, the "
        "authors': t = 9, 21, ..., 93)",
    )
    from training.common.core import guidance

    defaults = recorded_defaults()
    o.add_argument(
        "--pooling-lambda",
        type=float,
        default=defaults["pooling_lambda"],
        help="log-sum-exp temperature over the spatial positions (default %(default)s, the authors'; larger pools "
        "closer to the maximum)",
    )
    o.add_argument(
        "--attention-term",
        choices=guidance("genziqa.file_format").ATTENTION_TERMS,
        default=defaults["attention_term"],
        help="how the two prompts' pooled logits combine (default %(default)s, the authors')",
    )
    o.add_argument(
        "--prompts",
        nargs=2,
        metavar=("GOOD", "BAD"),
        default=defaults["prompts"],
        help="the antonym prompts after the context vectors (default %(default)s, the authors'; give words the "
        "text encoder knows)",
    )
    o.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("output")
    r.add_argument("--out", required=True, help="run folder: checkpoints/, loss.csv, loss.png, genziqa.safetensors")
    r.add_argument("--export", help="where to write the GenzIQA file (default: OUT/genziqa.safetensors)")
    r.add_argument(
        "--table-images",
        type=int,
        default=256,
        help="score this many training images (spread over the label file) with the trained file and store their "
        "statistics in it, so that IQA Score gives percentiles (default 256; 0: no table)",
    )
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--keep-checkpoints", type=int, default=3)
    r.add_argument("--resume", help="a checkpoint folder, or 'latest' (the newest in OUT/checkpoints, else start)")


def run(args: argparse.Namespace) -> int:
    train(args)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "grad_accum", "rank", "checkpoint_every", "max_timestep"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.steps is not None and args.steps < 1 or args.epochs is not None and not args.epochs > 0:
        raise TrainingError("--steps must be at least 1 and --epochs positive.")
    if not (math.isfinite(args.pooling_lambda) and args.pooling_lambda > 0):
        raise TrainingError(f"--pooling-lambda must be a positive number, got {args.pooling_lambda}.")
    if not all(p.strip() for p in args.prompts):
        raise TrainingError("--prompts needs two non-empty texts, the good one first.")
    if args.resolution and args.resolution < 8 or args.resolution < 0:
        raise TrainingError(f"--resolution must be 0 (native size) or at least 8, got {args.resolution}.")


def _family(sites: list, given: Optional[str]) -> str:
    if given:
        return given
    if len(sites) == 70:
        return "sdxl"
    if len(sites) == 16:
        return "sd2" if sites[0].context_dim == 1024 else "sd1"
    if (len(sites), sites[0].context_dim if sites else 0) == (4, 64):
        return "toy"
    raise TrainingError(
        f"The base UNet has {len(sites)} cross-attention layers, not an SD1.x/SD2.x (16) or SDXL (70) layout; "
        "GenzIQA training needs one of those (or the toy model's 4)."
    )


def scoring_timesteps(max_timestep: int) -> tuple[int, ...]:
    """The authors' test timesteps (9, 21, ..., 93 of t < 100) scaled to t < max_timestep."""
    from training.common.core import guidance

    authors = guidance("genziqa.file_format").AUTHORS_TIMESTEPS
    return tuple(sorted({int(t * max_timestep / TRAIN_TIMESTEPS) for t in authors}))


def mos_standardisation(labels: list) -> tuple[float, float]:
    """Mean and (population) std of the MOS; the targets are (MOS - mean) / std, calibration (std, mean)."""
    mos = torch.tensor([lab.mos for lab in labels], dtype=torch.float64)
    mean, std = float(mos.mean()), float(mos.std(unbiased=False))
    if not std > 0:
        raise TrainingError(
            f"Every image in the label file has the same MOS ({mean:g}): there is nothing to learn. Give images "
            "of different quality."
        )
    return mean, std


def sample_index(seed: int, position: int, count: int, cache: dict) -> int:
    """The label row at a global stream position: epoch by epoch, each a seeded permutation of the rows."""
    epoch = position // count
    if epoch not in cache:
        cache.clear()
        cache[epoch] = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    return cache[epoch][position % count]


def raw_offset(scorer: Any, labels: list, count: int = OFFSET_IMAGES) -> float:
    """The untrained file's mean raw score over the first label rows (at the file's test timesteps).

    Raw GenzIQA scores sit far from zero (the pooled logits are log-sum-exps over the latent's positions);
    the loss compares raw - offset with the standardised MOS, so training learns the ranking, not a shift,
    and the calibration takes the offset: score = std * (raw - offset) + mean."""
    raws = [scorer.evaluate(scorer.encode(load_pixels(lab.path)))["raw"] for lab in labels[:count]]
    return float(torch.cat(raws).mean())


def load_pixels(path: Path) -> torch.Tensor:
    """[1, H, W, 3] float in [0, 1]; an unreadable image is a TrainingError naming it (datasets.decode_image)."""
    import numpy as np

    from training.common.datasets import decode_image

    image = decode_image(Path(path).read_bytes, str(path))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def _training_table(base: Any, trained: Any, labels: list, args: argparse.Namespace, scorer_mod: Any, fmt: Any) -> dict:
    """The trained file's percentile table: its scores on up to --table-images training images, scored by the
    scorer that Load GenzIQA builds (the LoRA through the host's loader)."""
    from tqdm import tqdm

    from training.genziqa.table import score_table

    scorer = scorer_mod.GenzIQAScorer(base.patcher, base.clip, base.vae, trained)
    count = min(args.table_images, len(labels))
    with tqdm(total=count, desc="genziqa-train: percentile table", unit="image") as bar:
        return score_table(
            lambda px: scorer.score_images(px)[0],
            load_pixels,
            labels,
            count,
            fmt.TABLE_METRIC,
            f"python -m training genziqa-train: scores of {count} of the {len(labels)} images of {args.labels}",
            progress=bar.update,
        )


def train(args: argparse.Namespace, base: Any = None) -> Path:
    """Run the training; `base` (a training.common.host.BaseModel) replaces --base when given (tests). Returns the file."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from training.common import host
    from training.common.core import guidance
    from training.common.draws import sample_draws
    from training.common.loss_log import LossLog
    from training.common.run_checkpoints import latest_checkpoint, read_state, write_checkpoint
    from training.genziqa.labels import check_sizes, read_labels
    from training.genziqa.prompts import encode_prompts
    from training.genziqa.trainable import TrainableGenzIQA

    _check_args(args)
    out = Path(args.out)
    labels = read_labels(Path(args.labels), Path(args.images))
    mean, std = mos_standardisation(labels)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    set_seed(args.seed)

    if base is None:
        host.import_host(args.comfyui_dir)
        base = host.load_base(args.base, args.plugin)
    gz_host, fresh, fmt = guidance("genziqa.host"), guidance("genziqa.fresh"), guidance("genziqa.file_format")
    scorer_mod, selection = guidance("genziqa.scorer"), guidance("genziqa.layer_selection")
    if not (hasattr(base.clip, "encode_with_context") or isinstance(base.clip.tokenize("a"), dict)):
        raise TrainingError(
            f"--base {Path(args.base).name}: its text encoder is not the host's CLIP and takes no context vectors "
            "(no encode_with_context). GenzIQA training needs an SD1.x/SD2.x/SDXL checkpoint or the toy model."
        )
    check_sizes(labels, gz_host.vae_stride(base.vae))
    unet = base.unet.requires_grad_(False)
    for frozen in (getattr(base.clip, "cond_stage_model", None), getattr(base.vae, "first_stage_model", None)):
        if isinstance(frozen, torch.nn.Module):
            frozen.requires_grad_(False)
    family = _family(selection.model_sites(unet), args.family)
    start = fresh.fresh_file(
        base.patcher,
        base.clip,
        family,
        rank=args.rank,
        seed=args.seed,
        base_model=Path(args.base).stem,
        image_size=args.resolution or None,
        # the toy UNet was trained on pixels in [-1, 1]; CLIP-normalised input is the authors' SD recipe
        pixel_norm="unit" if family == "toy" else "clip",
        timesteps=scoring_timesteps(args.max_timestep),
        pooling_lambda=args.pooling_lambda,
        attention_term=args.attention_term,
        prompts=tuple(args.prompts),
    )
    # The scorer runs the frozen model (no LoRA patches: the trained LoRA runs as hooks) and reads the logits.
    scorer = scorer_mod.GenzIQAScorer(base.patcher, base.clip, base.vae, replace(start, lora={}))
    if torch.equal(scorer.context[0], scorer.context[1]):
        raise TrainingError(
            f"The prompts {args.prompts[0]!r} and {args.prompts[1]!r} give the same text features on this text "
            "encoder (words it does not know read alike), so the two prompts could not differ and the noise term "
            "would be 0. Give --prompts GOOD BAD with words the encoder knows (docs/genziqa.md, the toy proof)."
        )
    module = TrainableGenzIQA(start, unet)
    optimizer = torch.optim.AdamW(module.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    module, optimizer = accelerator.prepare(module, optimizer)
    trainable = accelerator.unwrap_model(module)

    per_rank_step = args.batch_size * args.grad_accum
    steps = args.steps or max(1, math.ceil(args.epochs * len(labels) / (per_rank_step * world)))
    settings = {
        "command": "genziqa-train",
        "labels": str(args.labels),
        "images": str(args.images),
        "base": str(args.base),
        "family": family,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "lora_rank": args.rank,
        "max_timestep": args.max_timestep,
        "pooling_lambda": args.pooling_lambda,
        "attention_term": args.attention_term,
        "prompts": list(args.prompts),
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "world_size": world,
        "steps": steps,
        "mos_mean": mean,
        "mos_std": std,
    }
    step, offset = 0, None
    ckpt = latest_checkpoint(out) if args.resume == "latest" else Path(args.resume) if args.resume else None
    if ckpt is not None:
        state, recorded = read_state(ckpt), recorded_defaults()
        for key in RESUME_KEYS:
            if state.get(key, recorded.get(key)) != settings[key]:
                raise TrainingError(
                    f"--resume {ckpt}: it was trained with {key}={state.get(key)!r}, this run has {settings[key]!r}. "
                    "Resume with the same settings (a different setting is a new run: use another --out)."
                )
        accelerator.load_state(str(ckpt))
        step, offset = int(state["step"]), float(state["raw_offset"])
    if offset is None:
        offset = raw_offset(scorer, labels)
    settings["raw_offset"] = offset
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(settings, indent=1))

    log = LossLog(out, main, resume_step=step, ylabel="MSE against standardised MOS")
    device = accelerator.device
    order: dict = {}
    started = time.time()
    bar = tqdm(total=steps, initial=step, disable=not main, desc="genziqa-train", unit="step")
    while step < steps:
        total = torch.zeros((), device=device)
        for micro in range(args.grad_accum):
            first = ((step * args.grad_accum + micro) * world + rank) * args.batch_size
            positions = list(range(first, first + args.batch_size))
            batch = [labels[sample_index(args.seed, p, len(labels), order)] for p in positions]
            latents = [scorer.encode(load_pixels(lab.path)) for lab in batch]
            if len({tuple(x.shape) for x in latents}) > 1:
                raise TrainingError(
                    f"At --resolution 0 the images of a batch must share a size; {batch[0].name} and others differ. "
                    "Give --resolution, or --batch-size 1."
                )
            latents = torch.cat(latents).to(device)
            draws = sample_draws(args.seed, positions, tuple(latents.shape[1:]), args.max_timestep)
            target = torch.tensor([(lab.mos - mean) / std for lab in batch], device=device)
            with accelerator.accumulate(module):
                with accelerator.autocast():
                    weights = module()
                    context, pooled = encode_prompts(base.clip, scorer.meta.prompts, weights["ctx"])
                    with trainable.lora_on_unet(weights):
                        raw = scorer.train_terms(latents, draws.timesteps, draws.noise, context, pooled)["raw"]
                    loss = torch.nn.functional.mse_loss(raw.float() - offset, target.float())
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach() / args.grad_accum
        step += 1
        mean_loss = accelerator.reduce(total, reduction="mean").item()
        if not math.isfinite(mean_loss):
            raise TrainingError(f"The loss is {mean_loss} at step {step}: lower --lr, or use --mixed-precision no.")
        log.add(step, mean_loss, args.lr, step * per_rank_step * world, time.time() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if step % args.checkpoint_every == 0 or step == steps:
            log.flush()
            write_checkpoint(accelerator, module, out, step, settings, args.keep_checkpoints)
    bar.close()
    log.close()
    target_path = Path(args.export) if args.export else out / "genziqa.safetensors"
    if main:
        trained = trainable.to_file(calibration=(std, mean - std * offset))
        if args.table_images > 0:
            trained = trained.with_meta(norm_table=_training_table(base, trained, labels, args, scorer_mod, fmt))
        fmt.save_genziqa(target_path, trained)
    accelerator.wait_for_everyone()
    return target_path
