"""Export the toy base model's EMA weights from a training state as the shipped fp16 checkpoint, and
(with --card) rewrite its model card from the same state.

    python -m toy.export_base --state out/toy/base/state.pt --out weights/toy/toy_base.safetensors \\
        --card weights/toy/MODEL_CARD.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .card import adapter_section, write_card
from .train_base import export_from_state


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.export_base", description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, default=Path("out/toy/base/state.pt"))
    ap.add_argument("--out", type=Path, default=Path("weights/toy/toy_base.safetensors"))
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    ap.add_argument("--card", type=Path, default=None, help="also write the model card here")
    ap.add_argument("--finished", action="store_true", help="the card says training had finished")
    ap.add_argument(
        "--adapter-run",
        type=Path,
        action="append",
        default=[],
        help="the toy adapter's run folders (python -m training train --out), in order: its section of the card",
    )
    ap.add_argument("--adapter", type=Path, default=Path("weights/toy/toy_adapter_piqe.safetensors"))
    ap.add_argument("--sweep", type=Path, default=None, help="scores.npz of scripts/toy_sweep.py, for the card")
    a = ap.parse_args(argv)
    out = export_from_state(a.state, a.out, use_ema=not a.raw)
    print(out)
    if a.card is not None:
        state = torch.load(a.state, map_location="cpu", weights_only=False)
        adapter = adapter_section(a.adapter_run, a.adapter, a.sweep) if a.adapter_run else ""
        print(
            write_card(
                a.card,
                state,
                out,
                a.state.parent / "loss.csv",
                still_training=not a.finished,
                ema=not a.raw,
                adapter=adapter,
            )
        )


if __name__ == "__main__":
    main()
