"""The GenzIQA file: one safetensors file with the learned prompt context, the UNet LoRA and a JSON header.

Tensors:
  genziqa.ctx.<encoder>            [n_ctx, width]: the shared context vectors for one of the host CLIP's
                                   text encoders ("l" for SD1.x, "h" for SD2.x, "g" and "l" for SDXL);
  lora_unet_<host path>.lora_down.weight [rank, in], .lora_up.weight [out, rank], .alpha (a scalar):
                                   the LoRA in the host's own LoRA key format (the host's LoRA loader reads
                                   it), on attn2 to_q / to_k / to_v / to_out.0 of the UNet.
Header key "genziqa": a JSON object with the fields of GenzIQAMeta (see docs/genziqa.md), optionally with
"norm_table": the calibrated scores' statistics on the training set in the pack's norm-table format
(adapter/norm_table.py), one metric named TABLE_METRIC, from which IQA Score gives percentiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from ...adapter.errors import IQAAdapterError, load_error_detail
from ...adapter.norm_table import MetricStats, NormTable
from .layer_selection import FAMILIES, LayerSelection

HEADER_KEY = "genziqa"
FORMAT_VERSION = 1
CTX_PREFIX = "genziqa.ctx."
LORA_PREFIX = "lora_unet_"
LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")  # the attn2 projections that carry the LoRA


def lora_key(module_path: str, projection: str) -> str:
    """The host LoRA key stem of one attn2 projection ("lora_unet_input_blocks_1_1_..._attn2_to_q")."""
    return LORA_PREFIX + f"{module_path}.{projection}".replace(".", "_")


# The authors' test-time timesteps: indices 10, 22, ..., 94 of the 1000-step Euler schedule (strength 0.8,
# 50 steps, 8 samples), i.e. timesteps 9, 21, ..., 93.
AUTHORS_TIMESTEPS = (9, 21, 33, 45, 57, 69, 81, 93)
ATTENTION_TERMS = ("mean", "good_minus_bad")
PIXEL_NORMS = ("clip", "unit")
TABLE_METRIC = "genziqa"  # the metric's name inside a file's norm_table


@dataclass(frozen=True)
class GenzIQAMeta:
    """What the tensors cannot say. Defaults are the authors' code (docs/genziqa.md)."""

    family: str
    context_dim: int
    base_model: str = ""
    layers: LayerSelection = field(default_factory=LayerSelection)
    pooling_lambda: float = 0.14
    timesteps: tuple[int, ...] = AUTHORS_TIMESTEPS
    prompts: tuple[str, str] = ("Good Photo.", "Bad Photo.")
    attention_term: str = "mean"  # the authors: mean over both prompts, heads and tokens
    noise_term: bool = True  # ||eps - eps_good|| - ||eps - eps_bad||
    noise_seed: int = 0
    pixel_norm: str = "clip"  # the authors feed the VAE CLIP-normalized pixels
    image_size: int | None = 512  # square resize before encoding (None: native size)
    calibration: tuple[float, float] = (1.0, 0.0)  # score = a * raw + b
    norm_table: Mapping[str, Any] | None = None  # statistics of the scores on the training set (module docstring)

    @property
    def stats(self) -> MetricStats | None:
        """The calibrated scores' training-set statistics, for percentiles (None: the file has no table)."""
        if self.norm_table is None:
            return None
        return NormTable.from_dict(self.norm_table, "the GenzIQA file's norm_table").get(TABLE_METRIC)

    def to_json(self) -> dict[str, Any]:
        table = {} if self.norm_table is None else {"norm_table": dict(self.norm_table)}
        return {
            "format": "genziqa",
            "version": FORMAT_VERSION,
            "family": self.family,
            "context_dim": self.context_dim,
            "base_model": self.base_model,
            "layers": self.layers.to_json(),
            "pooling_lambda": self.pooling_lambda,
            "timesteps": list(self.timesteps),
            "prompts": list(self.prompts),
            "attention_term": self.attention_term,
            "noise_term": self.noise_term,
            "noise_seed": self.noise_seed,
            "pixel_norm": self.pixel_norm,
            "image_size": self.image_size,
            "calibration": {"a": self.calibration[0], "b": self.calibration[1]},
            **table,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> "GenzIQAMeta":
        def fail(msg: str) -> IQAAdapterError:
            return IQAAdapterError(f"{where}: {msg}")

        if obj.get("format") != "genziqa":
            raise fail('the header is not a GenzIQA header (format must be "genziqa").')
        if obj.get("version") != FORMAT_VERSION:
            raise fail(f"format version {obj.get('version')!r} is not supported (this pack reads {FORMAT_VERSION}).")
        family = obj.get("family")
        if family not in FAMILIES:
            raise fail(f"'family' must be one of {', '.join(FAMILIES)}, got {family!r}.")
        try:
            cal = obj.get("calibration", {"a": 1.0, "b": 0.0})
            meta = cls(
                family=family,
                context_dim=int(obj["context_dim"]),
                base_model=str(obj.get("base_model", "")),
                layers=LayerSelection.from_json(obj.get("layers", "all"), where),
                pooling_lambda=float(obj.get("pooling_lambda", 0.14)),
                timesteps=tuple(int(t) for t in obj.get("timesteps", AUTHORS_TIMESTEPS)),
                prompts=tuple(str(p) for p in obj.get("prompts", ("Good Photo.", "Bad Photo."))),
                attention_term=str(obj.get("attention_term", "mean")),
                noise_term=bool(obj.get("noise_term", True)),
                noise_seed=int(obj.get("noise_seed", 0)),
                pixel_norm=str(obj.get("pixel_norm", "clip")),
                image_size=None if obj.get("image_size", 512) is None else int(obj.get("image_size", 512)),
                calibration=(float(cal["a"]), float(cal["b"])),
                norm_table=obj.get("norm_table"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IQAAdapterError):
                raise
            raise fail(f"the header is incomplete or malformed ({type(exc).__name__}: {exc}).") from None
        meta.validate(where)
        return meta

    def validate(self, where: str) -> None:
        def fail(msg: str) -> IQAAdapterError:
            return IQAAdapterError(f"{where}: {msg}")

        if len(self.prompts) != 2 or not all(p.strip() for p in self.prompts):
            raise fail("'prompts' must be two non-empty texts, the good one first.")
        if not self.timesteps or not all(0 <= t < 1000 for t in self.timesteps):
            raise fail("'timesteps' must be a non-empty list of integers in [0, 1000).")
        if not (math.isfinite(self.pooling_lambda) and self.pooling_lambda > 0):
            raise fail(f"'pooling_lambda' must be a positive number, got {self.pooling_lambda}.")
        if self.attention_term not in ATTENTION_TERMS:
            raise fail(f"'attention_term' must be one of {', '.join(ATTENTION_TERMS)}.")
        if self.pixel_norm not in PIXEL_NORMS:
            raise fail(f"'pixel_norm' must be one of {', '.join(PIXEL_NORMS)}.")
        if self.image_size is not None and self.image_size < 8:
            raise fail("'image_size' must be null or at least 8.")
        if self.context_dim <= 0 or not all(math.isfinite(c) for c in self.calibration):
            raise fail("'context_dim' must be positive and 'calibration' finite.")
        if self.norm_table is not None:
            if not isinstance(self.norm_table, Mapping) or TABLE_METRIC not in self.norm_table.get("metrics", {}):
                raise fail(f"'norm_table' must be a norm table with the metric '{TABLE_METRIC}'.")
            NormTable.from_dict(self.norm_table, f"{where}: norm_table")


@dataclass
class GenzIQAFile:
    """A loaded GenzIQA file: metadata, context vectors per text encoder, LoRA tensors (host key format)."""

    meta: GenzIQAMeta
    context: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor]
    name: str = "GenzIQA file"

    @property
    def n_ctx(self) -> int:
        return next(iter(self.context.values())).shape[0]

    def with_meta(self, **changes: Any) -> "GenzIQAFile":
        return replace(self, meta=replace(self.meta, **changes))


def _check_tensors(context: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor], where: str) -> None:
    if not context:
        raise IQAAdapterError(f"{where} has no context vectors ('{CTX_PREFIX}<encoder>' tensors).")
    shapes = {k: tuple(v.shape) for k, v in context.items()}
    if any(len(s) != 2 or s[0] < 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise IQAAdapterError(f"{where}: context vectors must be [n_ctx, width] with one n_ctx for all; got {shapes}.")
    for k, v in list(context.items()) + list(lora.items()):
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise IQAAdapterError(f"{where}: tensor '{k}' is not finite floating point; the file is corrupt.")
    for k in lora:
        if k.endswith(".lora_up.weight"):
            down = k.replace(".lora_up.weight", ".lora_down.weight")
            if down not in lora or lora[down].ndim != 2 or lora[k].ndim != 2 or lora[down].shape[0] != lora[k].shape[1]:
                raise IQAAdapterError(f"{where}: LoRA '{k}' has no matching lora_down of the same rank.")


def read_genziqa(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str] | None, name: str) -> GenzIQAFile:
    """A GenzIQAFile from safetensors tensors and header metadata, with an error for anything missing."""
    raw = (header or {}).get(HEADER_KEY)
    if raw is None:
        raise IQAAdapterError(
            f"{name} has no '{HEADER_KEY}' header: it is not a GenzIQA file (an IQA-Adapter or LoRA file?). "
            "Choose a GenzIQA .safetensors file."
        )
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise IQAAdapterError(f"{name}: the '{HEADER_KEY}' header is not valid JSON ({exc}).") from None
    if not isinstance(obj, dict):
        raise IQAAdapterError(f"{name}: the '{HEADER_KEY}' header must be a JSON object.")
    meta = GenzIQAMeta.from_json(obj, name)
    context = {k[len(CTX_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CTX_PREFIX)}
    lora = {k: v for k, v in tensors.items() if k.startswith(LORA_PREFIX)}
    other = sorted(set(tensors) - {CTX_PREFIX + k for k in context} - set(lora))
    if other:
        raise IQAAdapterError(f"{name}: unexpected tensors {other[:4]}; a GenzIQA file holds only context and LoRA.")
    _check_tensors(context, lora, name)
    return GenzIQAFile(meta, context, lora, name)


def save_genziqa(path: str | Path, file: GenzIQAFile) -> Path:
    """Write a GenzIQA file (float32 tensors, metadata in the header)."""
    from safetensors.torch import save_file

    file.meta.validate(str(path))
    _check_tensors(file.context, file.lora, str(path))
    tensors = {CTX_PREFIX + k: v.detach().float().contiguous().cpu() for k, v in file.context.items()}
    tensors.update({k: v.detach().float().contiguous().cpu() for k, v in file.lora.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps(file.meta.to_json())})
    return path


def load_genziqa(path: str | Path) -> GenzIQAFile:
    """Read a GenzIQA file; clear errors for a missing, corrupt or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise IQAAdapterError(f"GenzIQA file '{path}' not found.")
    if path.suffix != ".safetensors":
        raise IQAAdapterError(f"GenzIQA file '{path.name}' must be a .safetensors file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # truncated or not safetensors at all
        raise IQAAdapterError(f"GenzIQA file '{path.name}' could not be read ({load_error_detail(exc)}).") from None
    return read_genziqa(tensors, header, path.name)
