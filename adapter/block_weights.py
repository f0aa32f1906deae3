"""Per-block weights of the quality term, written like the UNet's layout: "input: 0.5, middle: 1, output 2: 0".

Names are the host's block names: a group (`input`, `middle`, `output`), a block of it by the host's block
index (`input 4`, `output 2`, `middle 0`), or `all`. The valid ones for a model are those of its family's
layout in adapter/unet_layouts.py (SD1.5, SDXL, the toy), recognised from the model's own attn2 sites. A
block not named keeps weight 1; a block name wins over its group, a group over `all`, whatever the order.

The quality term of a layer is linear in its V_ip, so weight w on a layer is V_ip times w, applied once to
the cached K/V when the condition is built (QualityTokens.with_layer_weights): no work per step. A layer
at weight 0 is not patched at all, so all zeros is exactly scale 0.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

from .errors import IQAAdapterError
from .unet_layouts import BLOCK_LAYOUTS, attn2_sites

GROUPS = ("input", "middle", "output")
ALL = "all"
LAYOUT_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "toy": "the toy model"}
_ITEM = re.compile(r"^\s*([A-Za-z]+(?:\s*\d+)?)\s*[:=]\s*(\S+)\s*$")
_NAME = re.compile(r"^([a-z]+)\s*(\d+)?$")

SiteKey = tuple[str, int, int]


def parse_block_weights(text: str) -> dict[str, float]:
    """'name: weight' items separated by commas, semicolons or lines -> {normalized name: weight}."""
    out: dict[str, float] = {}
    for raw in re.split(r"[,;\n]", text or ""):
        if not raw.strip():
            continue
        m = _ITEM.match(raw)
        if m is None:
            raise IQAAdapterError(
                f"cannot read {raw.strip()!r}: write 'block: weight' items separated by commas, e.g. "
                "'input: 0.5, middle: 1, output 2: 0'."
            )
        name = _normalize(m.group(1))
        weight = _weight(m.group(2), name)
        if name in out:
            raise IQAAdapterError(f"'{name}' is given twice; give each block once.")
        out[name] = weight
    return out


def _normalize(name: str) -> str:
    m = _NAME.match(name.strip().lower())
    if m is None:
        return name.strip().lower()
    return m.group(1) if m.group(2) is None else f"{m.group(1)} {int(m.group(2))}"


def _weight(text: str, name: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise IQAAdapterError(f"the weight of '{name}' is {text!r}, not a number; give a number >= 0.") from None
    if not math.isfinite(w) or w < 0:
        raise IQAAdapterError(
            f"the weight of '{name}' is {text}; give a finite number >= 0 (0 turns the block off, 1 is the full term)."
        )
    return w


def layout_of(site_keys: Sequence[SiteKey]) -> Optional[str]:
    """The layout of adapter/unet_layouts.py whose attn2 sites are exactly these; None for another UNet."""
    keys = sorted(site_keys)
    return next((name for name in BLOCK_LAYOUTS if sorted(attn2_sites(name)) == keys), None)


def block_names(site_keys: Sequence[SiteKey]) -> list[str]:
    """Every name valid for these sites: all, the groups, then each block, in layout order."""
    groups = [g for g in GROUPS if any(k[0] == g for k in site_keys)]
    blocks = list(dict.fromkeys(f"{k[0]} {k[1]}" for k in site_keys))
    order = {g: i for i, g in enumerate(GROUPS)}
    blocks.sort(key=lambda b: (order[b.split()[0]], int(b.split()[1])))
    return [ALL, *groups, *blocks]


def site_weights(weights: dict[str, float], site_keys: Sequence[SiteKey]) -> Optional[tuple[float, ...]]:
    """The weight of every site, in the order given; None when every weight is 1 (the node as without weights)."""
    layout = layout_of(site_keys)
    valid = block_names(attn2_sites(layout) if layout else site_keys)
    unknown = [n for n in weights if n not in valid]
    if unknown:
        family = LAYOUT_NAMES.get(layout or "", "this model")
        raise IQAAdapterError(
            f"unknown block {', '.join(repr(n) for n in unknown)} for {family}. Valid names: {', '.join(valid)}."
        )
    out = []
    for block, index, _ in site_keys:
        name = f"{block} {index}"
        out.append(weights.get(name, weights.get(block, weights.get(ALL, 1.0))))
    return None if all(w == 1.0 for w in out) else tuple(out)
