"""An adapter trained with use_flag, rewritten as the same adapter without the flag: the experiment behind
"why does the sweep bend at the top when the negative branch is z = 0" (docs/training.md, "The toy world").

With use_flag the projection sees [z, 1]; its weight column for the flag times 1 is a constant, so
proj([z, 1]) = W_z z + (w_flag + b). The folded file keeps W_z and takes w_flag + b as its bias, with
use_flag off in its header. Every target then gives exactly the same tokens as before, and only the CFG
negative branch changes: the pack's default uncond (zeros) now means z = 0 with the flag on, "average
quality", which is what zeros means to an adapter trained without the flag. Sweeping both files at the
node's defaults (scripts/toy_sweep.py --adapter) isolates that one difference on one set of weights.

    python scripts/flag_fold.py weights/toy/toy_adapter_quality.safetensors out/toy/toy_adapter_folded.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PROJ_WEIGHT, PROJ_BIAS = "image_proj.proj.weight", "image_proj.proj.bias"


def fold_flag(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, header) of the flag-free equivalent of a use_flag adapter with pos_encode_L 0."""
    if not meta.get("use_flag"):
        raise ValueError("this adapter was trained without use_flag: there is no flag to fold")
    if meta.get("pos_encode_L", 0):
        raise ValueError("pos_encode_L > 0 encodes the flag too (sin/cos of 1): it does not fold into a bias")
    out = dict(tensors)
    w = tensors[PROJ_WEIGHT].float()
    out[PROJ_WEIGHT] = w[:, :-1].contiguous().to(tensors[PROJ_WEIGHT].dtype)
    out[PROJ_BIAS] = (tensors[PROJ_BIAS].float() + w[:, -1]).to(tensors[PROJ_BIAS].dtype)
    return out, dict(meta, use_flag=False, comment=f"{meta.get('comment', '')}; flag folded into the bias")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="an IQA-Adapter file trained with use_flag")
    ap.add_argument("dst", type=Path, help="where to write the folded copy")
    args = ap.parse_args(argv)
    with safe_open(str(args.src), "pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors, meta = fold_flag(tensors, json.loads(header["iqa_adapter"]))
    header["iqa_adapter"] = json.dumps(meta)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.dst), metadata=header)
    print(f"{args.dst}: use_flag folded into {PROJ_BIAS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
