"""Benchmark: images per second of `python -m training score` against calling pyiqa directly, in the same run.

Both sides do the whole job on the same JPEG files: build the metric, read and decode each file, resize it to
--size x --size (PIL bicubic), turn it into an RGB float batch in [0, 1] and score it. The direct side is the
loop a user would write around `pyiqa.create_metric(name)`; the score side is training/iqa_adapter/score.py in this
process (one process), which also saves parts, merges them and writes the norm table. Both give the same
scores (checked). Rounds are interleaved; the ratio (score / direct images per second) is the median of the
per-round ratios (neighbouring measurements share whatever else loads the machine), shown for wall time and
for CPU time (images per CPU-second of all the process's threads: score decodes in a background thread, which
helps wall time only where a core is free). Goal: >= 0.95.

    OMP_NUM_THREADS=1 .venv/bin/python bench/score_throughput.py [--metrics piqe niqe] [--images 24] [--size 512] [--batch 8] [--rounds 5]

Only metrics that run offline with real weights are offered (score never uses random weights): piqe (no
file) and niqe (its parameters from scripts/prepare_test_data.sh, or IQA_TEST_NIQE_MAT).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))

import common  # noqa: E402
from prepared_data import NIQE_MAT  # noqa: E402  (scripts/, on the path through common)

sys.path.insert(0, str(common.REPO))
log = logging.getLogger("bench.score_throughput")


def make_images(folder: Path, n: int) -> list[Path]:
    """n photo-like JPEGs of 640x480 (smooth scene, edges, noise that varies per image)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:480, 0:640].astype(np.float64)
        base = 110 + 60 * np.sin(xx / (5 + i % 7)) * np.cos(yy / (9 + i % 5)) + 0.2 * yy
        img = np.stack([base, base * 0.85, 240 - base], -1) + rng.normal(0, 1 + 3 * (i % 5), (480, 640, 3))
        f = folder / f"img{i:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f, quality=50 + i % 40)
        files.append(f)
    return files


def direct(name: str, files: list[Path], size: int, batch: int) -> dict[str, float]:
    """The plain pyiqa loop: create_metric, then decode, resize, stack and score batch by batch."""
    import numpy as np
    import pyiqa
    import torch
    from PIL import Image

    kw = {"pretrained_model_path": str(NIQE_MAT)} if name == "niqe" else {}
    metric = pyiqa.create_metric(name, device=torch.device("cpu"), **kw)
    out = {}
    for i in range(0, len(files), batch):
        chunk = files[i : i + batch]
        arrays = []
        for f in chunk:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            s = metric(x).flatten().tolist()
        out.update({f.stem: v for f, v in zip(chunk, s)})
    return out


def via_score(name: str, folder: Path, size: int, batch: int, work: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    from training.iqa_adapter import score

    if work.exists():
        shutil.rmtree(work)
    p = argparse.ArgumentParser()
    score.add_arguments(p)
    out = work / "scores.parquet"
    iqa_dir = ["--iqa-dir", str(NIQE_MAT.parent)] if name == "niqe" else []
    score.run(
        p.parse_args(
            [
                "--data",
                str(folder),
                "--metrics",
                name,
                "--out",
                str(out),
                "--size",
                str(size),
                "--batch",
                str(batch),
                "--no-progress",
                *iqa_dir,
            ]
        )
    )
    t = pq.read_table(out)
    return dict(zip(t.column("key").to_pylist(), t.column(name).to_pylist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", nargs="+", default=["piqe", "niqe"], choices=["piqe", "niqe"])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if "niqe" in args.metrics and not NIQE_MAT.is_file():
        raise SystemExit(f"NIQE parameters missing at {NIQE_MAT}: run scripts/prepare_test_data.sh")
    tmp = Path(tempfile.mkdtemp(prefix="score-bench-"))
    files = make_images(tmp / "images", args.images)
    rows = []
    for name in args.metrics:
        ref = direct(name, files, args.size, args.batch)  # warm-up of both sides, and the correctness check
        got = via_score(name, tmp / "images", args.size, args.batch, tmp / "work")
        worst = max(abs(got[k] - ref[k]) / max(1.0, abs(ref[k])) for k in ref)
        if sorted(got) != sorted(ref) or worst > 1e-6:
            raise SystemExit(f"{name}: score differs from pyiqa (worst relative difference {worst:g})")
        rates: dict[str, list[float]] = {"direct": [], "score": [], "direct_cpu": [], "score_cpu": []}
        sides = {
            "direct": lambda: direct(name, files, args.size, args.batch),
            "score": lambda: via_score(name, tmp / "images", args.size, args.batch, tmp / "work"),
        }
        for _ in range(args.rounds):
            for side, fn in sides.items():
                t, c = time.perf_counter(), time.process_time()  # process_time: CPU seconds of all threads
                fn()
                rates[side].append(len(files) / (time.perf_counter() - t))
                rates[f"{side}_cpu"].append(len(files) / (time.process_time() - c))
        wall = [s / d for s, d in zip(rates["score"], rates["direct"])]
        cpu = [s / d for s, d in zip(rates["score_cpu"], rates["direct_cpu"])]
        rows.append(
            [
                name,
                f"{max(rates['direct']):.2f}",
                f"{max(rates['score']):.2f}",
                f"{statistics.median(wall):.3f}",
                f"{min(wall):.3f}",
                f"{statistics.median(cpu):.3f}",
            ]
        )
    shutil.rmtree(tmp)
    common.print_table(
        f"score vs pyiqa direct: {args.images} JPEGs of 640x480 resized to {args.size}, batch {args.batch}, CPU, "
        f"{torch.get_num_threads()} torch thread(s), {args.rounds} rounds (images/s: best round; ratio = score/direct, "
        "median and worst of per-round ratios; CPU ratio: the same with images per CPU-second of all threads, which "
        "other load on the machine disturbs less; both sides include building the metric and decoding)",
        ["metric", "pyiqa direct", "score", "ratio (median)", "ratio (worst round)", "CPU ratio (median)"],
        rows,
    )


if __name__ == "__main__":
    main()
