"""One command line with a subcommand per job. Each job module exposes add_arguments(parser) and
run(args) -> int, so this file only wires names to modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module, one-line help)
COMMANDS = {
    "score": (
        "training.iqa_adapter.score",
        "score a dataset with pyiqa metrics: a Parquet file and a normalisation table",
    ),
    "embed": (
        "training.iqa_adapter.embed",
        "compute every image's reference embedding once, for train --kind reference",
    ),
    "train": ("training.iqa_adapter.train", "train an IQA-Adapter on a base checkpoint, a dataset and its scores"),
    "export": (
        "training.iqa_adapter.export",
        "write a training checkpoint as an IQA-Adapter file for Load IQA-Adapter",
    ),
    "genziqa-train": (
        "training.genziqa.train",
        "train a GenzIQA file on an image folder and a MOS label file (pyiqa CSV)",
    ),
    "convert": (
        "training.iqa_adapter.convert",
        "turn the official training script's save_state output into an IQA-Adapter file",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from training.common.errors import TrainingError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except TrainingError as exc:  # a clear message that names the file or row and the fix; no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
