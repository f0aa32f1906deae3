"""Export the toy base model's EMA weights from a training state as the shipped fp16 checkpoint (the model
card is written by python -m toy.card from the same state).

    python -m toy.export_base --state out/toy/base/state.pt --out weights/toy/toy_base.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .train_base import export_from_state


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m toy.export_base", description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, default=Path("out/toy/base/state.pt"))
    ap.add_argument("--out", type=Path, default=Path("weights/toy/toy_base.safetensors"))
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    a = ap.parse_args(argv)
    print(export_from_state(a.state, a.out, use_ema=not a.raw))


if __name__ == "__main__":
    main()
