"""Checkpoint formats that plug-ins add to the base loader (training/common/host.py load_base).

Training reads a base model with the host's own loader, as Load Checkpoint does. A model family the host
cannot read (the toy world's files, toy/model.py) registers its format here from its own package:

    register_checkpoint_format("toy", is_format=is_toy_checkpoint, load=load_toy_checkpoint)

and `--base` tries the registered formats first. Training never imports a plug-in by its own choice: the
command line names it (`--plugin toy`, imported before the base is read), or the caller has imported it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from training.common.errors import TrainingError


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    is_format: Callable[[Path], bool]  # reads as little as it needs (a header); False for another format
    load: Callable[[Path], tuple[Any, Any, Any]]  # (ModelPatcher, CLIP, VAE), as Load Checkpoint gives them


_FORMATS: dict[str, CheckpointFormat] = {}


def register_checkpoint_format(
    name: str, is_format: Callable[[Path], bool], load: Callable[[Path], tuple[Any, Any, Any]]
) -> None:
    """Add (or, for the same name, replace: a plug-in imported twice) a format that load_base tries first."""
    if not name or not callable(is_format) or not callable(load):
        raise ValueError(f"register_checkpoint_format({name!r}, ...) needs a name and two callables.")
    _FORMATS[name] = CheckpointFormat(name, is_format, load)


def registered_formats() -> tuple[str, ...]:
    return tuple(_FORMATS)


def find_format(path: Path) -> Optional[CheckpointFormat]:
    """The first registered format that claims the file, or None (then the host's loader reads it)."""
    return next((f for f in _FORMATS.values() if f.is_format(Path(path))), None)


def import_plugins(modules: Sequence[str]) -> None:
    """Import each plug-in module named by --plugin; importing it registers its formats."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TrainingError(
                f"--plugin {module}: cannot import it ({exc}). Give a module importable from here, e.g. "
                "`--plugin toy` run from the pack's folder."
            ) from None


def add_plugin_argument(group: Any) -> None:
    """--plugin MODULE (repeatable), for the commands that read a --base checkpoint."""
    group.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module before reading --base, so that it registers its checkpoint format (the toy "
        "world's files: --plugin toy); repeatable",
    )
