"""The few named points where nodes reach the ComfyUI host. Works on upstream ComfyUI and the PyPI fork."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Iterable

import torch

ADAPTER_FOLDER = "iqa_adapter"
ADAPTER_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def folder_paths() -> ModuleType:
    """The host's folder_paths module (comfy.cmd.folder_paths on the PyPI fork)."""
    try:
        from comfy.cmd import folder_paths as fp  # PyPI fork layout
    except ImportError:
        import folder_paths as fp  # upstream ComfyUI
    return fp


def register_model_folder(name: str, extensions: Iterable[str]) -> None:
    """Add models/<name> as a model folder, keeping paths that extra_model_paths.yaml already gave it."""
    fp = folder_paths()
    default = os.path.join(fp.models_dir, name)
    table = fp.folder_names_and_paths
    paths, exts = [default], set(extensions)
    if name in table:
        old_paths, old_exts = table[name][0], table[name][1]
        paths = list(dict.fromkeys(list(old_paths) + paths))
        exts |= set(old_exts)
    table[name] = (paths, exts)


def model_file_list(folder: str) -> list[str]:
    return sorted(folder_paths().get_filename_list(folder))


def model_file_path(folder: str, name: str) -> str:
    """Full path of a file in a registered model folder; an error that says where to put it if missing."""
    from ..adapter import IQAAdapterError

    fp = folder_paths()
    path = fp.get_full_path(folder, name) if name else None
    if not path or not os.path.isfile(path):
        where = ", ".join(fp.get_folder_paths(folder)) or f"models/{folder}"
        raise IQAAdapterError(
            f"Model file '{name}' not found in the '{folder}' folder. Put it in {where} (or list a folder for '{folder}' in extra_model_paths.yaml, extra_paths.yaml on ComfyUI since 2026)."
        )
    return path


def host_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **kwargs) -> torch.Tensor:
    """The host's optimized_attention, looked up at call time exactly as the host's own layers do."""
    from comfy.ldm.modules import attention

    return attention.optimized_attention(q, k, v, heads, **kwargs)


def progress_bar(total: int):
    import comfy.utils

    return comfy.utils.ProgressBar(total)


IQA_FOLDER = "iqa"
GENZIQA_FOLDER = "genziqa"
GENZIQA_EXTENSIONS = (".safetensors",)
IQA_EXTENSIONS = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".mat", ".pkl")


def model_folder_dirs(name: str) -> list[str]:
    """Every directory of a registered model folder (models/<name> plus extra_model_paths.yaml entries)."""
    return [str(p) for p in folder_paths().get_folder_paths(name)]


def compute_device() -> torch.device:
    """Where the host runs models (the GPU when there is one)."""
    import comfy.model_management as mm

    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where the host parks models between uses."""
    import comfy.model_management as mm

    return mm.unet_offload_device()


class _EndRunAfterSampling:
    """An OUTER_SAMPLE wrapper: runs the sampling, then the hook's end_run() however it ended. A class holding
    the hook, not a closure, so that whatever a clone does to model_options (a deep copy on older hosts, a
    dict-and-list copy on the newest) the wrapper it gets ends the hook that the clone samples with: the
    guidance hook is shared by every clone on every host (its __deepcopy__ returns itself)."""

    def __init__(self, hook: Any):
        self.hook = hook

    def __call__(self, executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            self.hook.end_run()


def release_after_sampling(model, hook: Any, key: str) -> bool:
    """Have the host call hook.end_run() when a sampling run of `model` ends, however it ends (an interrupt is
    raised in the sampler's progress callback, outside every model hook). Needs the host's sampling wrappers
    (comfy.patcher_extension, on upstream ComfyUI 0.3.64 and the February 2026 pip-installable host); False on the PyPI fork,
    which has none, where the hook sees the end of a run through its weakly held run token instead."""
    try:
        import comfy.patcher_extension as ext
    except ImportError:
        return False
    wrapper = _EndRunAfterSampling(hook)
    ext.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, key, wrapper, model.model_options, is_model_options=True)
    return True
