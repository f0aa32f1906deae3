"""Benchmark: images per second of the IQA Score node against calling pyiqa directly, in the same run.

Both sides use the same network with the same (random) weights: pyiqa's own metric object as users call
it (`metric(images)`, no-grad scoring with its input checks) and the IQA Score node as the host runs it
(inside torch.inference_mode, host IMAGE in, with conversion, progress bar, percentiles, table and plot).
Rounds are interleaved; rates are the best round of each side, ratios the median of per-round ratios
(neighbouring measurements share whatever else loads the machine). Goal: the node's overhead is at most 5%. pyiqa is also
timed inside torch.inference_mode (as the host runs every node), which separates the node's own overhead
from the effect of inference mode itself.

    .venv/bin/python bench/iqa_score.py [--metrics topiq_nr musiq] [--batch 4] [--size 256] [--rounds 9]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault(
    "TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-")
)  # random builds never touch a real cache

import common  # noqa: E402

log = logging.getLogger("bench.iqa_score")
# pyiqa options that build the same architecture without weight files (for the direct side).
DIRECT_RANDOM_KWARGS = {
    "topiq_nr": {"pretrained": False, "backbone_pretrain": False},
    "musiq": {"pretrained": False},
    "cnniqa": {"pretrained": None},
    "piqe": {},
    "entropy": {},
}


def timed(fn, n_images: int) -> float:
    t = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t)


def bench_metric(pack, name: str, batch: int, size: int, rounds: int) -> dict:
    import pyiqa
    import torch

    model = common.random_iqa_model(name)
    with torch.inference_mode(False):
        direct = pyiqa.create_metric(name, device=torch.device("cpu"), **DIRECT_RANDOM_KWARGS[name])
        direct.net.load_state_dict(model.net.state_dict())
        direct.eval()
    image = torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(0))  # host IMAGE
    # The same NCHW view of the host image that the node hands to the metric (channels-last in memory, which
    # CPU convolutions run faster on than a contiguous copy: keep it identical on both sides).
    nchw = image.movedim(-1, 1)
    node = pack.nodes.iqa_score.IQAScore()

    def run_direct():
        return direct(nchw)

    def run_direct_inference_mode():
        with torch.inference_mode():
            return direct(nchw)

    def run_node(bs: int):
        def run():
            with torch.inference_mode():
                return node.score(image, model, bs)

        return run

    ref = run_direct().flatten().tolist()
    got = run_node(batch)()["result"][0]
    if max(abs(a - b) for a, b in zip(ref, got)) > 1e-4 * max(1.0, max(abs(r) for r in ref)):
        raise SystemExit(f"{name}: IQA Score {got} differs from pyiqa {ref}")
    sides = {
        "direct": run_direct,
        "direct_im": run_direct_inference_mode,
        "node_b1": run_node(1),
        f"node_b{batch}": run_node(batch),
    }
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            rates[k].append(timed(fn, batch))
    out = {k: max(v) for k, v in rates.items()}
    # Ratios are taken within each round (neighbouring measurements share the machine's load), then the median.
    for k in sides:
        out[f"{k}/direct"] = statistics.median(a / b for a, b in zip(rates[k], rates["direct"]))
        out[f"{k}/direct_im"] = statistics.median(a / b for a, b in zip(rates[k], rates["direct_im"]))
    return out


def node_fixed_cost(pack, batch: int, size: int, rounds: int) -> float:
    """Seconds per IQA Score call around the metric itself: conversion, checks, progress bar, percentiles,
    table and plot, measured with a stand-in metric that costs nothing (a mean)."""
    import torch

    class Mean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy_param = torch.nn.Parameter(torch.empty(0))

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    iqa = pack.guidance.iqa_models
    spec = pack.guidance.metric_specs.get_spec("topiq_nr")
    model = iqa.IQAModel("topiq_nr", spec, Mean(), pack.adapter.default_norm_table().get("topiq_nr"))
    image = torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(0))
    node = pack.nodes.iqa_score.IQAScore()
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        with torch.inference_mode():
            node.score(image, model, batch)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", nargs="+", default=["topiq_nr", "musiq"], choices=sorted(DIRECT_RANDOM_KWARGS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    pack = common.start_host()
    rows = []
    for name in args.metrics:
        r = bench_metric(pack, name, args.batch, args.size, args.rounds)
        rows.append((name, r))
    fixed = node_fixed_cost(pack, args.batch, args.size, args.rounds)
    b = f"node_b{args.batch}"
    log.info(
        "IQA Score vs pyiqa, %d images of %dx%d, CPU, %d thread(s), %d rounds (images/s, best round; ratio = node/direct, median of per-round ratios)",
        args.batch,
        args.size,
        args.size,
        torch.get_num_threads(),
        args.rounds,
    )
    log.info(
        "| metric | pyiqa direct | pyiqa direct, inference_mode | IQA Score, batch_size=%d | ratio | ratio vs inference_mode "
        "| IQA Score, batch_size=1 | ratio |",
        args.batch,
    )
    log.info("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        log.info(
            "| %s | %.2f | %.2f | %.2f | %.3f | %.3f | %.2f | %.3f |",
            name,
            r["direct"],
            r["direct_im"],
            r[b],
            r[f"{b}/direct"],
            r[f"{b}/direct_im"],
            r["node_b1"],
            r["node_b1/direct"],
        )
    log.info(
        "IQA Score's own cost per call around the metric (stand-in metric, %d images): %.1f ms, i.e. %.1f%% of "
        "the fastest metric call above",
        args.batch,
        fixed * 1e3,
        100.0 * fixed / min(args.batch / r["direct_im"] for _, r in rows),
    )


if __name__ == "__main__":
    main()
