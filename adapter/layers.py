"""Where the cross-attention layers of a host UNet are, in the checkpoint's layer order.

The checkpoint numbers layers in diffusers processor order: down blocks, up blocks, then the mid block.
In the host's terms that is: input blocks in order, then output blocks, then the middle block, each with
its transformer depth index. The middle block's key is ("middle", 0, depth) - the host sets block id 0 for
it. The sites are read from the model itself, so every UNet of the SD1.5/SDXL family works, at any width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn

from .checkpoint import FAMILY_NAMES, AdapterSpec
from .errors import IQAAdapterError

SiteKey = tuple[str, int, int]


@dataclass(frozen=True)
class AttnSite:
    """One cross-attention layer: its host patch key and its projection shape [hidden, context]."""

    key: SiteKey
    hidden: int
    context_dim: int


def _transformers(block: nn.Module) -> Iterable[nn.Module]:
    for module in block.children() if isinstance(block, nn.Sequential) else [block]:
        if hasattr(module, "transformer_blocks"):
            yield module


def _layers_in(name: str, index: int, block: nn.Module) -> list[tuple[AttnSite, nn.Module]]:
    layers = []
    for transformer in _transformers(block):
        for depth, tb in enumerate(transformer.transformer_blocks):
            attn2 = getattr(tb, "attn2", None)
            if attn2 is None:
                continue
            w = attn2.to_k.weight
            layers.append((AttnSite((name, index, depth), int(w.shape[0]), int(w.shape[1])), attn2))
    return layers


def find_attn2_layers(diffusion_model: nn.Module, extra: bool = True) -> list[tuple[AttnSite, nn.Module]]:
    """Every cross-attention site of a host UNet with its attn2 module, in checkpoint order (input,
    output, middle, then any the model declares beyond its blocks, unless extra is False). Training reads to_k/to_v from the modules to initialise to_k_ip/to_v_ip."""
    layers: list[tuple[AttnSite, nn.Module]] = []
    for i, block in enumerate(getattr(diffusion_model, "input_blocks", [])):
        layers += _layers_in("input", i, block)
    for i, block in enumerate(getattr(diffusion_model, "output_blocks", [])):
        layers += _layers_in("output", i, block)
    middle = getattr(diffusion_model, "middle_block", None)
    if middle is not None:
        layers += _layers_in("middle", 0, middle)
    # Binding point for UNets with cross-attention outside the host's three block lists (the toy's pixel
    # refiner): extra_attn2_blocks() -> [(block name, block index, module with transformer_blocks)], last.
    declared = getattr(diffusion_model, "extra_attn2_blocks", None)
    for name, index, block in declared() if extra and callable(declared) else []:
        layers += _layers_in(name, index, block)
    return layers


def find_attn2_sites(diffusion_model: nn.Module) -> list[AttnSite]:
    """All cross-attention sites of a host UNet, in checkpoint order (input, output, middle)."""
    return [site for site, _ in find_attn2_layers(diffusion_model)]


def _describe_sites(sites: list[AttnSite]) -> str:
    from .checkpoint import FAMILIES_BY_LAYER_COUNT

    fam = FAMILY_NAMES.get(FAMILIES_BY_LAYER_COUNT.get(len(sites), ""), "an unknown architecture")
    ctx = sites[0].context_dim if sites else "?"
    return f"{fam} ({len(sites)} cross-attention layers, context width {ctx})"


def match_sites(spec: AdapterSpec, sites: list[AttnSite], name: str) -> None:
    """Check, before anything is patched, that the adapter fits this model layer by layer."""
    if not sites:
        raise IQAAdapterError(
            "The model has no cross-attention layers; IQA-Adapter needs an SD1.5- or SDXL-style UNet."
        )
    if len(sites) != spec.num_layers or sites[0].context_dim != spec.cross_dim:
        raise IQAAdapterError(
            f"{name} was trained for {spec.describe()}, but the model is {_describe_sites(sites)}. "
            "Use an IQA-Adapter made for this base model, or load the matching checkpoint."
        )
    for n, (site, (hidden, cd)) in enumerate(zip(sites, spec.layer_shapes)):
        if (site.hidden, site.context_dim) != (hidden, cd):
            raise IQAAdapterError(
                f"{name}: 'ip_adapter.{2 * n + 1}.to_k_ip.weight' (layer {n}) is [{hidden}, {cd}] but the model's "
                f"{site.key} cross-attention to_k is [{site.hidden}, {site.context_dim}]. The adapter was made for a "
                "different UNet: use an IQA-Adapter made for this base model."
            )
