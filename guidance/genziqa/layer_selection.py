"""Which cross-attention (attn2) layers a GenzIQA file reads, as data, and the model family check.

A layer is named in host terms, (block, id, depth): block "input", "middle" or "output", the block's
index in the host UNet (0 for the middle block) and the transformer depth inside it. So one format fits
the SD1.x/SD2.x layout (16 layers) and SDXL (70). "all" selects every attn2 layer of the model.

The authors' 16 layers (down blocks 0-2 two each, the mid block, up blocks 1-3 three each) are every
attn2 layer of the SD2.1 UNet; in host terms input 1,2,4,5,7,8, middle 0 and output 3..11, depth 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from ...adapter.errors import IQAAdapterError
from ...adapter.layers import AttnSite, find_attn2_layers
from ...adapter.unet_layouts import CONTEXT_DIMS, attn2_layer_count, attn2_sites

SiteKey = tuple[str, int, int]
BLOCKS = ("input", "middle", "output")

# (attn2 layer count, context width) of each known family; SD1.x and SD2.x share the SD1.5 block layout.
FAMILIES = {
    "sd1": (attn2_layer_count("sd15"), CONTEXT_DIMS["sd15"]),
    "sd2": (attn2_layer_count("sd15"), CONTEXT_DIMS["sd2"]),
    "sdxl": (attn2_layer_count("sdxl"), CONTEXT_DIMS["sdxl"]),
    # The toy world's 64 px UNet (toy/model.py DEFAULT_UNET): four attn2 layers on its 64-wide word table.
    "toy": (4, 64),
}
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "toy": "the toy model"}

SD_16_LAYERS: tuple[SiteKey, ...] = attn2_sites("sd15")


@dataclass(frozen=True)
class LayerSelection:
    """The attn2 layers to read; an empty tuple means every attn2 layer of the model."""

    sites: tuple[SiteKey, ...] = ()

    @property
    def is_all(self) -> bool:
        return not self.sites

    def to_json(self) -> Any:
        return "all" if self.is_all else [list(s) for s in self.sites]

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "LayerSelection":
        if obj == "all":
            return cls(())
        bad = IQAAdapterError(
            f"{where}: 'layers' must be \"all\" or a non-empty list of [block, id, depth] with block one of "
            f'{", ".join(BLOCKS)}, e.g. [["input", 1, 0], ["middle", 0, 0]]; got {str(obj)[:120]}.'
        )
        if not isinstance(obj, list) or not obj:
            raise bad
        sites = []
        for item in obj:
            if not (isinstance(item, (list, tuple)) and len(item) == 3 and item[0] in BLOCKS):
                raise bad
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item[1:]):
                raise bad
            sites.append((str(item[0]), int(item[1]), int(item[2])))
        if len(set(sites)) != len(sites):
            raise IQAAdapterError(f"{where}: 'layers' names a layer twice.")
        return cls(tuple(sites))

    def resolve(self, available: Sequence[AttnSite]) -> list[AttnSite]:
        """The selected sites of a model, in the selection's order; an error naming any that it lacks."""
        by_key = {s.key: s for s in available}
        if self.is_all:
            return list(available)
        missing = [k for k in self.sites if k not in by_key]
        if missing:
            have = ", ".join(f"{b} {i}.{d}" for b, i, d in list(by_key)[:8])
            raise IQAAdapterError(
                f"The GenzIQA file reads cross-attention layers the model does not have: "
                f"{', '.join(f'{b} {i}.{d}' for b, i, d in missing[:6])}. The model's layers start {have}... "
                "Use a GenzIQA file made for this model family."
            )
        return [by_key[k] for k in self.sites]


def default_selection(family: str) -> LayerSelection:
    """The authors' 16 layers on the SD1.x/SD2.x layout; every layer on SDXL (the authors give none) and on
    the toy model (four)."""
    if family in ("sd1", "sd2"):
        return LayerSelection(SD_16_LAYERS)
    if family in ("sdxl", "toy"):
        return LayerSelection(())
    raise IQAAdapterError(f"Unknown model family '{family}'; known: {', '.join(FAMILIES)}.")


def model_sites(diffusion_model: nn.Module) -> list[AttnSite]:
    """The attn2 sites of the UNet's own blocks: the family's layout, which GenzIQA reads. Sites a model
    declares beyond its blocks (the toy's pixel refiner, adapter/layers.py) are not read: they are not part
    of the layout, and their module paths are not the host's block paths that the LoRA keys name."""
    return [site for site, _ in find_attn2_layers(diffusion_model, extra=False)]


def model_family(sites: Sequence[AttnSite]) -> str | None:
    """The known family whose layer count and context width the model has, else None."""
    if not sites:
        return None
    shape = (len(sites), sites[0].context_dim)
    return next((f for f, s in FAMILIES.items() if s == shape), None)


def describe_model(sites: Sequence[AttnSite]) -> str:
    fam = model_family(sites)
    ctx = sites[0].context_dim if sites else 0
    what = FAMILY_NAMES[fam] if fam else "a UNet"
    return f"{what} ({len(sites)} cross-attention layers, context width {ctx})"


def check_family(family: str, context_dim: int, sites: Sequence[AttnSite], name: str) -> None:
    """A file made for one family must not score with another: layer count and context width must match."""
    if not sites:
        raise IQAAdapterError("The MODEL has no cross-attention layers; GenzIQA needs an SD-family UNet.")
    layers = FAMILIES[family][0]
    if len(sites) != layers or sites[0].context_dim != context_dim:
        raise IQAAdapterError(
            f"{name} was made for {FAMILY_NAMES[family]} ({layers} cross-attention layers, context "
            f"width {context_dim}), but the MODEL is {describe_model(sites)}. Load the base model it was made "
            "for, or a GenzIQA file made for this model."
        )


_PATH = re.compile(r"^(input_blocks|middle_block|output_blocks)\.(\d+)\.(?:\d+\.)?transformer_blocks\.(\d+)\.attn2$")


def attn2_module_paths(diffusion_model: nn.Module) -> dict[SiteKey, str]:
    """Each attn2 site's module path in the host UNet ("input_blocks.1.1.transformer_blocks.0.attn2")."""
    out: dict[SiteKey, str] = {}
    for name, _ in diffusion_model.named_modules():
        m = _PATH.match(name)
        if m:
            block = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}[m.group(1)]
            index = 0 if block == "middle" else int(m.group(2))
            out[(block, index, int(m.group(3)))] = name
    return out
