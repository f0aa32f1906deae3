"""`python -m training convert`: the official training script's output -> an IQA-Adapter file.

The official script saves accelerate's save_state of its whole UNet wrapper: model.safetensors (or
pytorch_model.bin) with the frozen UNet under "unet.", the projection under "qual_proj_model." and the
attention processors under "adapter_modules.{i}." (i counts every processor, self- and cross-attention,
so the trained ones sit at the odd indices: exactly the IP-Adapter numbering). Only those two prefixes
are read; a DDP "module." prefix is dropped. The metrics and encoding are not in the file: give them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.common.errors import TrainingError

PREFIXES = {"qual_proj_model.": "image_proj.", "adapter_modules.": "ip_adapter."}
STATE_NAMES = ("model.safetensors", "pytorch_model.bin")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        required=True,
        help="the save_state folder (holding model.safetensors or pytorch_model.bin) or that file",
    )
    p.add_argument("--out", required=True, help="the IQA-Adapter file to write (.safetensors)")
    p.add_argument(
        "--metrics", nargs="+", required=True, help="the metrics it was trained on, in order (e.g. topiq_nr laion_aes)"
    )
    p.add_argument(
        "--use-flag", action="store_true", help="it was trained with use_flag=1 (the official script's default)"
    )
    p.add_argument("--pos-encode-L", type=int, default=0, help="its pos_encode L (0 = off)")
    p.add_argument("--no-normalize", action="store_true", help="it was trained on raw scores, not z-scores")
    p.add_argument("--base-model", default="sdxl", help="base model family, recorded in the metadata (default sdxl)")
    p.add_argument(
        "--norm-table", help="the training set's normalisation table to embed (default: none, the CC3M table applies)"
    )
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")


def _state_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in STATE_NAMES:
        if (path / name).is_file():
            return path / name
    raise TrainingError(
        f"--input {path}: no {' or '.join(STATE_NAMES)} there. Give the folder that accelerate's "
        "save_state wrote (checkpoint-N), or the model file itself."
    )


def _read_adapter_keys(path: Path) -> dict[str, torch.Tensor]:
    """Only the adapter's tensors; the frozen UNet (gigabytes) is never loaded."""

    def wanted(key: str) -> bool:
        return key.removeprefix("module.").startswith(tuple(PREFIXES))

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys() if wanted(k)}
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise TrainingError(
            f"--input {path.name} could not be read ({type(exc).__name__}: {str(exc)[:200]}). Is it the "
            "official script's save_state output?"
        ) from None
    if not isinstance(obj, dict):
        raise TrainingError(f"--input {path.name} holds a {type(obj).__name__}, not a state dict.")
    return {k: v for k, v in obj.items() if wanted(k)}


def convert_official(path: Path) -> dict[str, torch.Tensor]:
    """The official layout's adapter tensors under IP-Adapter flat keys."""
    found = _read_adapter_keys(_state_file(Path(path)))
    flat = {}
    for key, value in found.items():
        key = key.removeprefix("module.")
        for old, new in PREFIXES.items():
            if key.startswith(old):
                flat[new + key[len(old) :]] = value
    if not any(k.startswith("image_proj.") for k in flat) or not any(k.startswith("ip_adapter.") for k in flat):
        raise TrainingError(
            f"--input {path}: no 'qual_proj_model.*' and 'adapter_modules.*' tensors found. This is not "
            "the official IQA-Adapter training script's output."
        )
    return flat


def run(args: argparse.Namespace) -> int:
    from training.iqa_adapter.adapter_file import write_adapter_file

    flat = convert_official(Path(args.input))
    table = None
    if args.norm_table:
        table_path = Path(args.norm_table)
        if not table_path.is_file():
            raise TrainingError(f"--norm-table {table_path}: no such file.")
        table = json.loads(table_path.read_text())
    metadata = {
        "kind": "quality",
        "metrics": list(args.metrics),
        "use_flag": bool(args.use_flag),
        "pos_encode_L": args.pos_encode_L,
        "normalized": not args.no_normalize,
        "base_model": args.base_model,
        "comment": f"converted by python -m training convert from {Path(args.input).name}",
    }
    try:
        path = write_adapter_file(flat, Path(args.out), metadata, table, args.dtype)
    except TrainingError as exc:
        raise TrainingError(f"{exc} Check --metrics, --use-flag and --pos-encode-L against the training run.") from None
    print(f"wrote {path}")
    return 0
