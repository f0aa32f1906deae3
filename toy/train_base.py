"""Train the toy base model (ToyUNet + ToyCLIP's text table) from scratch on the toy image folder.

Epsilon loss under the host's own ModelSamplingDiscrete (the sigmas and timesteps KSampler uses), AdamW,
an EMA of the weights (what gets exported), 10 % empty captions so CFG works, a loss CSV, and a
resumable state file (weights, EMA, optimizer, step, RNG) written every --save-every steps. The batch
order is a function of (seed, step), so a resumed run continues exactly where an uninterrupted one would.

    python -m toy.train_base --data out/toy/patches --out out/toy/base --steps 200000 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.common.autograd_safety import make_autograd_safe

from .errors import ToyError
from .folder import read_folder
from .model import DEFAULT_UNET, build_model, build_text, default_config, save_toy_checkpoint
from .text import build_vocab
from .vae import ToyVAE

log = logging.getLogger(__name__)
STATE = "state.pt"


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of batch `step`: epoch e is a permutation seeded by (seed, e), walked in order."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ToyError(f"dataset has {n} images, fewer than the batch size {batch}; lower --batch")
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[k * batch : (k + 1) * batch]


class EMA:
    """Exponential moving average of parameters, decay warmed up as min(decay, (1+s)/(10+s))."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = [copy.deepcopy(m).requires_grad_(False) for m in modules]

    @torch.no_grad()
    def update(self, modules: list[torch.nn.Module], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for sm, m in zip(self.shadow, modules):
            for ps, p in zip(sm.parameters(), m.parameters()):
                ps.lerp_(p.detach(), 1.0 - d)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_from_state(state_path: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Write the (EMA) weights of a training state as an fp16 toy checkpoint."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    cfg = state["config"]
    patcher = build_model(cfg, seed=None)
    table = build_text(cfg)
    key = "ema" if use_ema else "model"
    patcher.model.diffusion_model.load_state_dict(state[key]["unet"])
    table.load_state_dict(state[key]["text"])
    meta = {
        "iqa_toy_training": {
            "step": state["step"],
            "weights": key,
            "last_loss_ema": state.get("loss_ema"),
            "train_seconds": round(state.get("train_seconds", 0.0), 1),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in (state.get("args") or {}).items()},
        }
    }
    return save_toy_checkpoint(out, patcher, table, config=cfg, dtype=torch.float16, extra_metadata=meta)


def _init_from(path: Path) -> dict:
    """A toy checkpoint's config, float32 weights and training step, to continue a base run from its export."""
    import json

    from .model import load_toy_checkpoint, read_header

    patcher, clip, _ = load_toy_checkpoint(path)
    meta = read_header(path)
    step = json.loads(meta.get("iqa_toy_training", "{}")).get("step", 0)
    return {
        "config": patcher.model.toy_config,
        "unet": patcher.model.diffusion_model.state_dict(),
        "text": clip.table.state_dict(),
        "step": int(step),
    }


def _trainable(unet: torch.nn.Module, table: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    """The parameters --train names, with requires_grad set on them only: "all", or "refiner" (the pixel
    refiner alone, to give a trained base's finest scale a cross-attention layer without touching what
    it draws; the UNet and text table stay as they are)."""
    if which == "refiner" and getattr(unet, "refine", None) is None:
        raise ToyError("--train refiner: this model has no pixel refiner (config 'refine' is 0)")
    params = list(unet.refine.parameters()) if which == "refiner" else [*unet.parameters(), *table.parameters()]
    chosen = {id(p) for p in params}
    for p in [*unet.parameters(), *table.parameters()]:
        p.requires_grad_(id(p) in chosen)
    return params


def _load_init(module: torch.nn.Module, weights: dict, path: Path) -> None:
    """Load --init weights; only the refiner's attention (added by --refine-attention) may be missing."""
    missing, unexpected = module.load_state_dict(weights, strict=False)
    absent = [k for k in missing if not k.startswith("refine.attend.")]
    if absent or unexpected:
        raise ToyError(
            f"--init {path}: its tensors do not fit this model (missing {absent[:3]}, unexpected {unexpected[:3]})"
        )


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, captions = read_folder(args.data)
    n = len(captions)
    state_path = out / STATE
    resume = state_path.is_file() and not args.restart
    state = torch.load(state_path, map_location="cpu", weights_only=False) if resume else None

    init = None if state or not args.init else _init_from(args.init)
    if state:
        cfg = state["config"]
    elif init:
        cfg = init["config"]
        if args.refine_attention is not None and args.refine_attention != cfg.get("refine_attention", 0):
            if not cfg.get("refine"):
                raise ToyError(f"--refine-attention: {args.init} has no pixel refiner to add attention to")
            cfg = {**cfg, "refine_attention": args.refine_attention}
    else:
        width = {} if args.refine_attention is None else {"refine_attention": args.refine_attention}
        cfg = default_config(build_vocab(captions), tokens=args.tokens, unet=dict(DEFAULT_UNET), **width)
    patcher = build_model(cfg, seed=args.seed)
    model = patcher.model
    unet = model.diffusion_model
    table = build_text(cfg, seed=args.seed)
    unet.train()
    table.train()
    make_autograd_safe(unet)  # the fork's in-place residual adds (training/common/autograd_safety.py)
    params = _trainable(unet, table, args.train)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    ema = EMA([unet, table], args.ema)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, loss_ema, secs = 0, None, 0.0
    if state:
        unet.load_state_dict(state["model"]["unet"])
        table.load_state_dict(state["model"]["text"])
        ema.shadow[0].load_state_dict(state["ema"]["unet"])
        ema.shadow[1].load_state_dict(state["ema"]["text"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["np_rng"])
        random.setstate(state["py_rng"])
        step, loss_ema, secs = state["step"], state.get("loss_ema"), state.get("train_seconds", 0.0)
        log.info("resumed from %s at step %d", state_path, step)
    elif init:
        # Weights only (the shipped fp16 EMA): raw and EMA weights start there, the optimizer starts afresh.
        for module, shadow, part in ((unet, ema.shadow[0], "unet"), (table, ema.shadow[1], "text")):
            _load_init(module, init[part], args.init)
            _load_init(shadow, init[part], args.init)
        step = init["step"]
        log.info("continuing from the weights of %s (step %d), with a fresh optimizer", args.init, step)

    ms = model.model_sampling
    sigmas = ms.sigmas.float()
    vae = ToyVAE(cfg["vae_factor"])
    n_params = sum(p.numel() for p in params)
    log.info(
        "%d images, %d trainable parameters, vocab %d, batch %d, %d threads",
        n,
        n_params,
        len(cfg["vocab"]),
        args.batch,
        args.threads,
    )

    csv_path = out / "loss.csv"
    new_csv = not csv_path.is_file() or not resume
    logf = open(csv_path, "w" if new_csv else "a", newline="")
    wr = csv.writer(logf)
    if new_csv:
        wr.writerow(["step", "loss", "loss_ema", "lr", "img_per_s", "train_seconds"])

    def save() -> None:
        _atomic_save(
            {
                "config": cfg,
                "step": step,
                "loss_ema": loss_ema,
                "train_seconds": secs,
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "model": {"unet": unet.state_dict(), "text": table.state_dict()},
                "ema": {"unet": ema.shadow[0].state_dict(), "text": ema.shadow[1].state_dict()},
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "np_rng": np.random.get_state(),
                "py_rng": random.getstate(),
            },
            state_path,
        )
        export_from_state(state_path, out / "toy_base_ema.safetensors")
        logf.flush()

    t_last, k_last = time.time(), step
    while step < args.steps:
        t0 = time.time()
        idx = batch_indices(n, args.batch, step, args.seed)
        x = images[idx].float().div_(255.0)  # [B,64,64,3] in [0,1]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x[flip] = x[flip].flip(2)
        z = model.process_latent_in(vae.encode(x))  # [B,192,8,8] in [-1,1]
        texts = [
            ("" if float(torch.rand((), generator=gen)) < args.text_dropout else captions[i]) for i in idx.tolist()
        ]
        t = torch.randint(0, len(sigmas), (len(idx),), generator=gen)
        sigma = sigmas[t]
        eps = torch.randn(z.shape, generator=gen)
        noisy = z + eps * sigma.view(-1, 1, 1, 1)
        xc = ms.calculate_input(sigma, noisy)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for gp in opt.param_groups:
            gp["lr"] = lr
        pred = unet(xc, ms.timestep(sigma).float(), context=table.encode_texts(texts))
        loss = F.mse_loss(pred, eps)
        if not math.isfinite(loss.item()):
            raise ToyError(f"loss became {loss.item()} at step {step}; lower --lr and resume from {state_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        step += 1
        ema.update([unet, table], step)
        secs += time.time() - t0
        loss_ema = loss.item() if loss_ema is None else 0.99 * loss_ema + 0.01 * loss.item()
        if step % args.log_every == 0:
            now = time.time()
            ips = (step - k_last) * args.batch / max(now - t_last, 1e-9)
            t_last, k_last = now, step
            wr.writerow([step, f"{loss.item():.6f}", f"{loss_ema:.6f}", f"{lr:.3g}", f"{ips:.1f}", f"{secs:.1f}"])
            logf.flush()
            log.info("step %d loss %.5f (ema %.5f) %.1f img/s", step, loss.item(), loss_ema, ips)
        if step % args.save_every == 0 or step == args.steps:
            save()
    logf.close()
    return state_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m toy.train_base", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("out/toy/patches"))
    ap.add_argument("--out", type=Path, default=Path("out/toy/base"))
    ap.add_argument("--steps", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--text-dropout", type=float, default=0.1)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--restart", action="store_true", help="ignore an existing state file in --out")
    ap.add_argument(
        "--train",
        choices=("all", "refiner"),
        default="all",
        help="which weights to train: all, or the pixel refiner alone (with --init and --refine-attention)",
    )
    ap.add_argument(
        "--refine-attention",
        type=int,
        default=None,
        help="width of the refiner's cross-attention block (a multiple of 32; 0 = none); a new model's "
        "default is toy.model.REFINE_ATTENTION; with --init, a width to add to a checkpoint without one",
    )
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="without a state file: continue from this toy checkpoint's "
        "weights (e.g. the shipped weights/toy/toy_base.safetensors), optimizer afresh",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(parse_args(argv))


if __name__ == "__main__":
    main()
