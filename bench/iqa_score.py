"""Benchmark: images per second of the IQA Score node against calling pyiqa directly, in the same run.

Both sides use the same network with the same (random) weights: pyiqa's own metric object as users call
it (`metric(images)`, no-grad scoring with its input checks) and the IQA Score node as the host runs it
(inside torch.inference_mode, host IMAGE in, with conversion, progress bar, percentiles, table and plot).
Rounds are interleaved and the best round of each side is reported (least disturbed by other load). Goal: the node's overhead is at most 5%. pyiqa is also
timed inside torch.inference_mode (as the host runs every node), which separates the node's own overhead
from the effect of inference mode itself.

    .venv/bin/python bench/iqa_score.py [--metrics topiq_nr musiq] [--batch 8] [--size 256] [--rounds 5]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))  # random builds never touch a real cache

import common  # noqa: E402

log = logging.getLogger("bench.iqa_score")
# pyiqa options that build the same architecture without weight files (for the direct side).
DIRECT_RANDOM_KWARGS = {"topiq_nr": {"pretrained": False, "backbone_pretrain": False}, "musiq": {"pretrained": False},
                        "cnniqa": {"pretrained": None}, "piqe": {}, "entropy": {}}


def timed(fn, n_images: int) -> float:
    t = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t)


def bench_metric(pack, name: str, batch: int, size: int, rounds: int) -> dict:
    import pyiqa
    import torch

    model = pack.guidance.iqa_models.load_iqa_model(name, random_weights=True)
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
    sides = {"direct": run_direct, "direct_im": run_direct_inference_mode, "node_b1": run_node(1),
             f"node_b{batch}": run_node(batch)}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            rates[k].append(timed(fn, batch))
    return {k: max(v) for k, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", nargs="+", default=["topiq_nr", "musiq"], choices=sorted(DIRECT_RANDOM_KWARGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    pack = common.start_host()
    rows = []
    for name in args.metrics:
        r = bench_metric(pack, name, args.batch, args.size, args.rounds)
        rows.append((name, r))
    b = f"node_b{args.batch}"
    log.info("IQA Score vs pyiqa, %d images of %dx%d, CPU, %d thread(s), best of %d rounds (images/s; ratio = node/direct)",
             args.batch, args.size, args.size, torch.get_num_threads(), args.rounds)
    log.info("| metric | pyiqa direct | pyiqa direct in inference_mode | IQA Score batch_size=%d | ratio | ratio vs inference_mode "
             "| IQA Score batch_size=1 | ratio |", args.batch)
    log.info("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        log.info("| %s | %.2f | %.2f | %.2f | %.3f | %.3f | %.2f | %.3f |", name, r["direct"], r["direct_im"], r[b],
                 r[b] / r["direct"], r[b] / r["direct_im"], r["node_b1"], r["node_b1"] / r["direct"])


if __name__ == "__main__":
    main()
