"""Benchmark: embedding one reference (512 and 1024 px) next to one sampling step, in one run.

Real-size SD1.5 UNet step (cfg batch 2, 64x64 latent = 512 px) and TOPIQ-NR with random weights (timing does
not need real ones), on this machine's CPU.

    .venv/bin/python bench/reference_embedding.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib
import os

import common


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pack = common.start_host()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    emb = importlib.import_module(pack.__name__ + ".guidance.reference_embedding")
    spec = pack.adapter.embedding_spec.spec_from_dict({"spec": "topiq_nr_resnet50_meanstd"}, "bench")
    topiq = common.random_iqa_model("topiq_nr")
    model = common.real_size_model("sd15")
    refs = {size: torch.rand(1, size, size, 3) for size in (512, 1024)}
    med = common.interleaved_medians(
        {
            "step": common.unet_step(model, "sd15", 64),
            "embed 512": lambda: emb.embed_reference(topiq, refs[512], spec),
            "embed 1024": lambda: emb.embed_reference(topiq, refs[1024], spec),
        },
        args.rounds,
    )
    step = med["step"]
    common.print_table(
        f"Reference embedding ({spec.name}, {spec.dim} values) vs one SD1.5 step (CPU, {torch.get_num_threads()} threads)",
        ["what", "seconds", "ratio to one step"],
        [[k, f"{v:.3f}", f"{v / step:.3f}"] for k, v in med.items()],
    )


if __name__ == "__main__":
    main()
