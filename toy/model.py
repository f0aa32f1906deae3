"""The toy checkpoint: one .safetensors file with the UNet and the text table, marked in its header.

Header metadata key "iqa_toy" holds the JSON config (UNet config, vocabulary, token count, repack), so
is_toy_checkpoint() reads only the header. Tensors are prefixed "unet." and "text.".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from .errors import ToyError
from .text import TextTable, ToyCLIP
from .unet import init_weights_, toy_unet_class
from .vae import FACTOR, LATENT_CHANNELS, ToyVAE

HEADER_KEY = "iqa_toy"
FORMAT_VERSION = 1

# The default toy UNet (about 1.5M parameters, 3 MB in fp16): 64 px images, s2d-8 latent 8x8x192, UNet grid
# 16x16x48 (repack 2), two levels of 64 channels (16x16 and 8x8). Without the eps skip (toy/unet.py) a net this
# narrow could not learn the identity-like map that epsilon prediction needs at high noise (a GroupNorm+SiLU
# output layer needs about two channels per signed component, and 64 < 2 x 48); with the skip it only learns
# the correction, so the width buys capacity, not that identity.
# Transformer blocks with cross-attention to the 64-wide text table: input block 3 (8x8), the middle, and
# output blocks 2 and 3 (16x16; the host pops transformer_depth_output from its end), so the IQA-Adapter
# has four attn2 sites in the UNet: ('input', 3, 0), ('output', 2, 0), ('output', 3, 0), ('middle', 0, 0); the
# pixel refiner's cross-attention (REFINE_ATTENTION) adds a fifth, ('output', 4, 0), at the full image.
DEFAULT_UNET = dict(
    in_channels=48,
    out_channels=48,
    model_channels=64,
    channel_mult=[1, 1],
    num_res_blocks=[1, 1],
    transformer_depth=[0, 1],
    transformer_depth_output=[1, 1, 0, 0],
    transformer_depth_middle=1,
    num_head_channels=32,
    context_dim=64,
    use_linear_in_transformer=True,
)


# Per-component std of the toy latents (images in [-1, 1]): 0.508 measured on clean patches; ToyUNet's skip.
SIGMA_DATA = 0.5


# Channels of ToyUNet's pixel refiner (toy/unet.py); 0 = none (the checkpoints made before it).
REFINE_CHANNELS = 24

# Width of the cross-attention block in the refiner (toy/unet.py, RefinerAttention); 0 = none (the checkpoints
# made before it). With it the toy has a fifth attn2 site, ('output', 4, 0), at the full 64x64 image.
REFINE_ATTENTION = 32


def default_config(
    vocab: list[str],
    tokens: int = 8,
    unet: dict | None = None,
    repack: int = 2,
    refine: int = REFINE_CHANNELS,
    refine_attention: int = REFINE_ATTENTION,
) -> dict:
    """A JSON-able toy config: what build_model() needs."""
    u = dict(DEFAULT_UNET)
    u.update(unet or {})
    u["in_channels"] = u["out_channels"] = LATENT_CHANNELS // (repack * repack)
    return {
        "format": FORMAT_VERSION,
        "unet": u,
        "repack": repack,
        "vae_factor": FACTOR,
        "image_size": 64,
        "tokens": tokens,
        "context_dim": u["context_dim"],
        "vocab": list(vocab),
        "sigma_data": SIGMA_DATA,
        "refine": refine,
        "refine_attention": refine_attention if refine else 0,
    }


def _host_unet_config(cfg: dict) -> dict:
    full = dict(
        image_size=cfg["image_size"] // cfg["vae_factor"],
        use_spatial_transformer=True,
        legacy=False,
        adm_in_channels=None,
        use_checkpoint=False,
        use_temporal_attention=False,
        use_temporal_resblock=False,
        dtype=torch.float32,
        repack=cfg["repack"],
        vae_factor=cfg["vae_factor"],
        sigma_data=cfg["sigma_data"],
        refine=cfg.get("refine", 0),
        refine_attention=cfg.get("refine_attention", 0),
    )
    full.update(cfg["unet"])
    return full


def _latent_format():
    import comfy.latent_formats

    class ToyLatent(comfy.latent_formats.LatentFormat):
        """s2d-8 pixels: 192 channels, no scaling, no preview factors."""

        latent_channels = LATENT_CHANNELS
        scale_factor = 1.0
        latent_rgb_factors = None
        latent_rgb_factors_bias = None
        taesd_decoder_name = None

    return ToyLatent


def build_model(cfg: dict, seed: int | None = 0):
    """A ModelPatcher around a host BaseModel (EPS) with the ToyUNet; weights initialised from seed
    (None: left as created, for loading)."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base as smb

    class ToyModelConfig(smb.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = _latent_format()
        sampling_settings = {}

    with torch.inference_mode(False):
        model = comfy.model_base.BaseModel(
            ToyModelConfig(_host_unet_config(cfg)), device=torch.device("cpu"), unet_model=toy_unet_class()
        )
        if seed is not None:
            init_weights_(model.diffusion_model, seed)
    model.toy_config = copy.deepcopy(cfg)
    model.diffusion_model.toy_config = model.toy_config
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def build_text(cfg: dict, seed: int = 0) -> TextTable:
    """The text table of a config, initialised from seed (outside inference mode, which the host's
    executor enters, so that the weights can be loaded and trained)."""
    with torch.inference_mode(False):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return TextTable(cfg["vocab"], tokens=cfg["tokens"], dim=cfg["context_dim"])


def _unet_of(model: Any) -> torch.nn.Module:
    if hasattr(model, "get_model_object"):
        return model.get_model_object("diffusion_model")
    if hasattr(model, "diffusion_model"):
        return model.diffusion_model
    return model


def _table_of(clip: Any) -> TextTable:
    return clip.table if isinstance(clip, ToyCLIP) else clip


def toy_state(model: Any, clip: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Flat tensors "unet.*" and "text.*" (optionally cast)."""
    sd = {}
    for prefix, module in (("unet.", _unet_of(model)), ("text.", _table_of(clip))):
        for k, v in module.state_dict().items():
            v = v.detach().to("cpu")
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            sd[prefix + k] = v.contiguous()
    return sd


def save_toy_checkpoint(
    path: str | Path,
    model: Any,
    clip: Any,
    config: dict | None = None,
    dtype: torch.dtype | None = torch.float16,
    extra_metadata: dict | None = None,
) -> Path:
    """Write a toy checkpoint: model is a ModelPatcher, BaseModel or the UNet; clip a ToyCLIP or TextTable.
    config defaults to the one the model was built with; extra_metadata adds header strings."""
    from safetensors.torch import save_file

    if config is None:
        base = model.model if hasattr(model, "model") else model
        config = getattr(base, "toy_config", None) or getattr(_unet_of(model), "toy_config", None)
        if config is None:
            raise ToyError(
                "save_toy_checkpoint: the model carries no toy config; pass config= (toy.model.default_config)"
            )
    meta = {HEADER_KEY: json.dumps(config)}
    for k, v in (extra_metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(toy_state(model, clip, dtype), str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_header(path: str | Path) -> dict[str, str]:
    """The safetensors header metadata (reads only the header)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ToyError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > 100_000_000:
            raise ToyError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ToyError(f"{path}: not a safetensors file ({e})") from None
    return header.get("__metadata__", {}) or {}


def is_toy_checkpoint(path: str | Path) -> bool:
    """True when the file is a safetensors file whose header carries the "iqa_toy" config."""
    try:
        return HEADER_KEY in read_header(path)
    except (OSError, ToyError):
        return False


def load_toy_checkpoint(path: str | Path):
    """(ModelPatcher, ToyCLIP, ToyVAE) from a toy checkpoint, weights in float32."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ToyError(f"{path}: toy checkpoint not found; run scripts/train_toy.sh or check the path")
    meta = read_header(path)
    if HEADER_KEY not in meta:
        raise ToyError(f"{path}: not a toy checkpoint (no '{HEADER_KEY}' in its header)")
    cfg = json.loads(meta[HEADER_KEY])
    sd = load_file(str(path))
    patcher = build_model(cfg, seed=None)
    table = build_text(cfg)
    with torch.inference_mode(False), torch.no_grad():
        for prefix, module in (("unet.", patcher.model.diffusion_model), ("text.", table)):
            part = {k[len(prefix) :]: v.float() for k, v in sd.items() if k.startswith(prefix)}
            missing, unexpected = module.load_state_dict(part, strict=False)
            if missing or unexpected:
                raise ToyError(
                    f"{path}: tensors do not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
    return patcher, ToyCLIP(table), ToyVAE(cfg["vae_factor"])
