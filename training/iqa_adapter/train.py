"""`python -m training train`: the paper's training of an IQA-Adapter on a frozen base model.

Frozen: the base UNet, its VAE and text encoder. Trained: the quality projection and every attn2 layer's
to_k_ip/to_v_ip (initialised from that layer's to_k/to_v). Condition dropout as the official script:
quality 1 %, text 5 %, both 1 %; a dropped quality vector is zeros after encoding (the inference uncond).
AdamW; mixed precision, gradient accumulation and DDP from accelerate; gradient checkpointing on request.
With --kind reference (the paper's reference scenario) each image is conditioned on its own embedding, read
from the file `python -m training embed` made once, with the same recipe; export writes the spec it carries.

Checkpoints (out/checkpoints/step-NNNNNN/) hold accelerate's state (adapter, optimizer, RNG) and
state.json (step, run settings); --resume continues exactly where the run stopped, because every random
draw is a function of the seed and the sample's stream position (training/common/draws.py).
Run under `accelerate launch` for several processes, GPUs or machines; see docs/training.md.
"""

from __future__ import annotations

import argparse

from training.common.base_formats import add_plugin_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument(
        "--base", required=True, help="single-file base checkpoint (SD1.5, SDXL; or a plug-in's format, see --plugin)"
    )
    g.add_argument("--data", required=True, help="image folder (caption sidecars NAME.txt) or webdataset shards")
    g.add_argument(
        "--kind",
        choices=("quality", "reference"),
        default="quality",
        help="quality: condition on --metrics scores (default); reference: condition each image on its own "
        "embedding (--embeddings), for Reference Quality Transfer",
    )
    g.add_argument("--scores", help="Parquet file from `python -m training score` (quality adapters)")
    g.add_argument("--norm-table", help="its normalisation table (default: the scores file with .norm.json)")
    g.add_argument("--metrics", nargs="+", help="pyiqa metric names, in the adapter's input order (quality adapters)")
    g.add_argument("--embeddings", help="Parquet file from `python -m training embed` (--kind reference)")
    g.add_argument(
        "--spec",
        help="with --kind reference: the embedding spec (name or JSON file) the embeddings must have been made "
        "with (default: the embeddings file's own)",
    )
    g.add_argument("--caption-column", help="take captions from this column of the scores file, not from the dataset")
    g.add_argument(
        "--comfyui-dir", help="an upstream ComfyUI folder to import the host from (default: the installed one)"
    )
    add_plugin_argument(g)
    a = p.add_argument_group("adapter")
    a.add_argument(
        "--proj", choices=("linear", "mlp"), default="linear", help="projection type (default linear, the paper's)"
    )
    a.add_argument("--num-tokens", type=int, default=2, help="quality tokens (default 2, the published config)")
    a.add_argument(
        "--use-flag",
        action="store_true",
        help="append the constant 1 feature (the official script's default; the published config has it off)",
    )
    a.add_argument("--pos-encode-L", type=int, default=0, help="sin/cos frequencies of the input (0 = off)")
    a.add_argument("--no-normalize", action="store_true", help="train on raw scores instead of z-scores")
    a.add_argument("--init-adapter", help="fine-tune this IQA-Adapter file instead of starting new")
    o = p.add_argument_group("optimisation")
    o.add_argument("--resolution", type=int, default=512, help="training image size (square center crop)")
    o.add_argument("--batch-size", type=int, default=4, help="images per process per micro-batch")
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    o.add_argument(
        "--steps", type=int, required=True, help="optimizer steps to train to (total, counting resumed ones)"
    )
    o.add_argument(
        "--lr", type=float, default=1e-4, help="AdamW learning rate (official script 1e-4; the paper ran 1e-5)"
    )
    o.add_argument("--weight-decay", type=float, default=1e-2)
    o.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    o.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute UNet activations in the backward pass"
    )
    o.add_argument("--shuffle-buffer", type=int, default=1000, help="streaming shuffle buffer (1 = dataset order)")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("output")
    r.add_argument("--out", required=True, help="run folder: checkpoints/, loss.csv, loss.png")
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--keep-checkpoints", type=int, default=3)
    r.add_argument(
        "--resume",
        help="a checkpoint folder, or 'latest': the newest in --out/checkpoints if there is one, else start "
        "(so one command starts and restarts a preemptible job)",
    )
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--export", help="also write the final adapter here (as `python -m training export` does)")


def run(args: argparse.Namespace) -> int:
    from training.iqa_adapter.loop import train

    train(args)
    return 0
