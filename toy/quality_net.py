"""The toy world's own IQA model: a small CNN that reads the three degradation levels of a 64 px picture.

Why the toy needs its own metric: the offline pyiqa metrics are blind to part of the toy's degradations at
64 px. On the toy pictures PIQE follows blur (SRCC 0.79 against the level, single degradation) and impulse
noise (0.71) but not JPEG (-0.10), so an adapter trained on PIQE alone has no reason to remove JPEG blocks
at a high target. This net is trained on the levels that toy/patches.py applied (exact labels), on its own
pictures (another patch seed than the adapter's), as a pyiqa metric is trained on its own IQA dataset.

Its score, `toy_quality` = 100 x (1 - the largest predicted level), higher is better, is the toy adapter's
trained metric; pyiqa's PIQE and NIQE and the `brisque` package stay held out. The three levels, and the
pooled features before them, tell blur from noise from JPEG.

    python -m toy.quality_net train --out weights/toy/toy_quality_net.safetensors   # builds its own pictures
    python -m toy.quality_net score --net weights/toy/toy_quality_net.safetensors --data out/toy/patches \
        --out out/toy/scores.parquet
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ToyError

log = logging.getLogger(__name__)
METRIC = "toy_quality"
KINDS = ("blur", "noise", "jpeg")
HEADER_KEY = "toy_quality_net"


class ToyQualityNet(torch.nn.Module):
    """[B, 3, 64, 64] RGB in [0, 1] -> [B, 3] levels (blur, noise, jpeg) in [0, 1].

    Two full-resolution convolutions see single-pixel impulses; three stride-2 stages reach the 8 px JPEG
    grid and blur's lost edges; the head reads the mean and the standard deviation of the last features over
    positions (how much and how unevenly each feature fires)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.width = w
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(w, w, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(2 * w, 3 * w, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Linear(6 * w, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(KINDS)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, 6 * width]: per-channel mean and std of the last stage."""
        f = self.body(x * 2.0 - 1.0)
        return torch.cat([f.mean((2, 3)), f.std((2, 3))], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x)))


def quality(levels: torch.Tensor) -> torch.Tensor:
    """toy_quality of predicted levels [B, 3]: 100 x (1 - the largest), as toy/genziqa_data.py labels."""
    return 100.0 * (1.0 - levels.max(1).values)


def save(net: ToyQualityNet, path: Path, meta: dict) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(sd, str(path), metadata={HEADER_KEY: json.dumps({"width": net.width, **meta})})
    return path


def load(path: str | Path) -> ToyQualityNet:
    """The net of a file written by `save` (float32, eval mode); a clear error for a missing or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ToyError(f"{path}: toy quality net not found; restore weights/toy from git or run scripts/train_toy.sh")
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get(HEADER_KEY)
        if meta is None:
            raise ToyError(f"{path} is not a toy quality net (no '{HEADER_KEY}' header)")
        sd = {k: f.get_tensor(k).float() for k in f.keys()}
    net = ToyQualityNet(int(json.loads(meta)["width"]))
    net.load_state_dict(sd)
    return net.eval().requires_grad_(False)


def _labelled(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 3, 64, 64] in [0, 1], levels [N, 3]) of a picture folder and its manifest folder.csv."""
    from .folder import read_folder

    manifest = folder.parent / f"{folder.name}.csv"
    if not manifest.is_file():
        raise ToyError(f"{manifest} not found: build the pictures with python -m toy.patches --out {folder}")
    images, _ = read_folder(folder)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(images):
        raise ToyError(f"{manifest} has {len(rows)} rows for {len(images)} pictures in {folder}: rebuild them")
    levels = torch.tensor([[float(r[k]) for k in KINDS] for r in rows])
    return images.permute(0, 3, 1, 2).float().div_(255.0), levels


def predict(net: ToyQualityNet, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Levels [N, 3] of images [N, 3, 64, 64] in [0, 1]."""
    with torch.inference_mode():
        return torch.cat([net(images[i : i + batch]) for i in range(0, len(images), batch)])


def report(levels: torch.Tensor, truth: torch.Tensor) -> dict:
    """SRCC of each predicted level against its true level, and of toy_quality against 1 - the largest."""
    from scipy.stats import spearmanr

    out = {k: float(spearmanr(levels[:, i], truth[:, i]).statistic) for i, k in enumerate(KINDS)}
    out[METRIC] = float(spearmanr(quality(levels), 1.0 - truth.max(1).values).statistic)
    return out


def train(args: argparse.Namespace) -> Path:
    from .patches import write_patches

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    sets = {}
    for name, count, seed in (("train", args.count, args.data_seed), ("val", args.val_count, args.data_seed + 1)):
        folder = work / name
        manifest = folder.parent / f"{folder.name}.csv"
        if not (manifest.is_file() and len(manifest.read_text().splitlines()) == count + 1):
            write_patches(folder, count, seed)
        sets[name] = _labelled(folder)
    x, y = sets["train"]
    net = ToyQualityNet(args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    t0, losses = time.time(), []
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        xb = x[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5  # the degradations are mirror-symmetric, not 8 px shifts
        xb[flip] = xb[flip].flip(3)
        loss = F.mse_loss(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 200 == 0:
            log.info("step %d loss %.5f", step + 1, float(np.mean(losses[-200:])))
    net.eval()
    window = min(200, max(1, args.steps // 5))
    val = report(predict(net, sets["val"][0]), sets["val"][1])
    log.info("held-out SRCC: %s", ", ".join(f"{k} {v:.3f}" for k, v in val.items()))
    meta = {
        "steps": args.steps,
        "seed": args.seed,
        "train_pictures": f"python -m toy.patches --count {args.count} --seed {args.data_seed}",
        "val_pictures": f"python -m toy.patches --count {args.val_count} --seed {args.data_seed + 1}",
        "loss_window": window,
        "loss_first_last": [float(np.mean(losses[:window])), float(np.mean(losses[-window:]))],
        "val_srcc": val,
        "train_seconds": round(time.time() - t0, 1),
    }
    return save(net, Path(args.out), meta)


def score_folder(args: argparse.Namespace) -> Path:
    """toy_quality of every picture of a folder, written as `python -m training score` writes pyiqa's."""
    from training.common.datasets import open_dataset
    from training.iqa_adapter.score import default_table_path, write_scores

    net = load(args.net)
    dataset = open_dataset(str(args.data))
    keys, images = [], []
    for sample in dataset.samples():
        keys.append(sample.key)
        images.append(np.asarray(sample.image, dtype=np.uint8))
    if not images:
        raise ToyError(f"{args.data}: no pictures to score")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    raw = quality(predict(net, x)).double().numpy()
    out = Path(args.out)
    source = f"python -m toy.quality_net score: {METRIC} of {len(keys)} pictures of {args.data} ({args.net})"
    write_scores(out, default_table_path(out), keys, {METRIC: raw}, {METRIC: False}, source, 0, {"net": str(args.net)})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.quality_net", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="job", required=True)
    t = sub.add_parser("train", help="train the net on pictures it builds (exact degradation labels)")
    t.add_argument("--out", type=Path, default=Path("weights/toy/toy_quality_net.safetensors"))
    t.add_argument("--work", type=Path, default=Path("out/toy/quality_net"), help="where its pictures go")
    t.add_argument("--count", type=int, default=8000)
    t.add_argument("--val-count", type=int, default=1000)
    t.add_argument("--data-seed", type=int, default=100, help="picture seed (validation: this + 1)")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("score", help="write a scores file and its norm table for `python -m training train`")
    s.add_argument("--net", type=Path, default=Path("weights/toy/toy_quality_net.safetensors"))
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(train(a) if a.job == "train" else score_folder(a))


if __name__ == "__main__":
    main()
