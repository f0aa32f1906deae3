"""Inputs and checks shared by the nodes that attach a condition over part of the sampling schedule."""

from __future__ import annotations

import math

from ..adapter import IQAAdapterError

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
