"""`python -m training export`: a training checkpoint -> an IQA-Adapter file that Load IQA-Adapter reads.

The header carries the metadata (metrics, use_flag, pos_encode_L, normalized, kind, base_model) and the
training set's normalisation table, so percentile targets on the adapter refer to its own training
distribution (Quality Condition uses that table when a file has one, and the CC3M table otherwise).
A reference adapter's header carries kind "reference" and its embedding spec, field by field, instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.common.errors import TrainingError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint folder (out/checkpoints/step-NNNNNN) or a run folder (its newest)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the IQA-Adapter file to write (.safetensors), e.g. in ComfyUI's models/iqa_adapter",
    )
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="weight precision (default fp16)")


def run(args: argparse.Namespace) -> int:
    path = export_checkpoint(Path(args.checkpoint), Path(args.out), args.dtype)
    print(f"wrote {path}")
    return 0


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "fp16") -> Path:
    from safetensors.torch import load_file

    from training.common.run_checkpoints import WEIGHTS_FILE, latest_checkpoint, read_state
    from training.iqa_adapter.adapter_file import write_adapter_file

    checkpoint = Path(checkpoint)
    if (checkpoint / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(checkpoint) or checkpoint
    state = read_state(checkpoint)
    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():
        raise TrainingError(f"{checkpoint} has no {WEIGHTS_FILE}: the checkpoint is incomplete. Export an earlier one.")
    if state.get("kind", "quality") == "reference":
        metadata, table = reference_metadata(state), None
    else:
        metadata, table = quality_metadata(state), _run_table(state)
    return write_adapter_file(load_file(str(weights)), out, metadata, table, dtype)


def _run_table(state: dict) -> dict:
    table_path = Path(state["norm_table"])
    if not table_path.is_file():
        raise TrainingError(
            f"The run's normalisation table {table_path} is gone; the adapter's percentiles need it. "
            "Put it back (it is written by `python -m training score`)."
        )
    return json.loads(table_path.read_text())


def _comment(state: dict) -> str:
    return f"trained by python -m training train, step {state['step']}, from {Path(state['base']).name}"


def quality_metadata(state: dict) -> dict:
    return {
        "kind": "quality",
        "metrics": state["metrics"],
        "use_flag": state["use_flag"],
        "pos_encode_L": state["pos_encode_L"],
        "normalized": state["normalized"],
        "base_model": state["base_family"],
        "comment": _comment(state),
    }


def reference_metadata(state: dict) -> dict:
    """kind reference and every field of the spec the run trained with: Load IQA-Adapter checks its size
    against the projection, and Reference Quality Transfer embeds references by it, as training did."""
    return {
        "kind": "reference",
        "embedding": state["embedding"],
        "base_model": state["base_family"],
        "comment": _comment(state),
    }
