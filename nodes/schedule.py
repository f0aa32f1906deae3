"""Inputs and checks shared by the nodes that attach a condition over part of the sampling schedule."""

from __future__ import annotations

import math
from typing import Any, Optional

from ..adapter import IQAAdapterError
from ..adapter.block_weights import parse_block_weights, site_weights
from ..adapter.patching import model_sites

MODEL_INPUT = ("MODEL", {"tooltip": "The SD1.5 or SDXL model to condition. It is cloned, never changed."})


def schedule_inputs(term: str) -> dict:
    """scale, start_percent and end_percent widgets; `term` names what the scale weighs."""
    return {
        "scale": (
            "FLOAT",
            {
                "default": 1.0,
                "min": 0.0,
                "max": 5.0,
                "step": 0.05,
                "tooltip": f"Weight of the {term} attention term (official default 1.0). 0 turns it off.",
            },
        ),
        "start_percent": (
            "FLOAT",
            {
                "default": 0.0,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": "Fraction of the schedule where the condition starts (0 = first step).",
            },
        ),
        "end_percent": (
            "FLOAT",
            {
                "default": 1.0,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": "Fraction of the schedule where it stops (1 = last step).",
            },
        ),
    }


def check_schedule(scale: float, start_percent: float, end_percent: float) -> None:
    """Finite values, scale >= 0 and 0 <= start <= end <= 1 (the API can send what the widgets would not allow)."""
    for name, x in (("scale", scale), ("start_percent", start_percent), ("end_percent", end_percent)):
        if not math.isfinite(x):
            raise IQAAdapterError(f"{name} is {x}; give a finite number.")
    if scale < 0:
        raise IQAAdapterError(f"scale is {scale}; it must be >= 0 (0 turns the term off).")
    if not (0.0 <= start_percent <= end_percent <= 1.0):
        raise IQAAdapterError(
            f"start_percent {start_percent} and end_percent {end_percent} must satisfy 0 <= start <= end <= 1."
        )


BLOCK_WEIGHTS_INPUT = (
    "STRING",
    {
        "default": "",
        "multiline": True,
        "tooltip": "Optional per-block weight of the term, as 'block: weight' items: 'input: 0.5, middle: 1, output: 1', "
        "or one block by its index, 'output 2: 0'. Names: all, input, middle, output, or '<group> <index>' of the "
        "model's own blocks (a wrong name lists them). Unnamed blocks keep 1; a block beats its group, a group "
        "beats all. Weights >= 0; 0 leaves the block unpatched. Empty: every block at 1.",
    },
)


def layer_weights(model: Any, text: Optional[str]) -> Optional[tuple[float, ...]]:
    """block_weights text -> the weight of each attn2 layer in checkpoint order; None when empty or all 1."""
    if text is not None and not isinstance(text, str):  # optional: may arrive unvalidated
        raise IQAAdapterError(
            f"block_weights must be text such as 'input: 0.5, output: 1', got a {type(text).__name__}."
        )
    if not text or not text.strip():
        return None
    try:
        return site_weights(parse_block_weights(text), [site.key for site in model_sites(model)])
    except IQAAdapterError as exc:
        raise IQAAdapterError(f"block_weights: {exc}") from None
