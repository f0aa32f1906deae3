"""GenzIQA's read-out of one cross-attention layer, and the attn2 replace patch that records it.

Per head, the logits are s = q k^T / sqrt(d_head), [B, heads, N positions, T tokens]. Each token's logits
are pooled over the N spatial positions by log-sum-exp with temperature lambda: (1/lambda) log sum_n
exp(lambda s_n), as the authors' code does (dim 1 of their [B*heads, N, T] scores). The layer's value for
a batch row is then the mean over heads and tokens, the mean their code takes of each layer's scores.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch


def pooled_logits(q: torch.Tensor, k: torch.Tensor, heads: int, lam: float) -> torch.Tensor:
    """[B] per-row mean over heads and tokens of the log-sum-exp-pooled logits, in float32."""
    b, n, inner = q.shape
    dh = inner // heads
    qh = q.float().reshape(b, n, heads, dh).transpose(1, 2)
    kh = k.float().reshape(k.shape[0], k.shape[1], heads, dh).transpose(1, 2)
    s = (qh @ kh.transpose(-1, -2)) / math.sqrt(dh)  # [B, H, N, T]
    pooled = torch.logsumexp(lam * s, dim=2) / lam  # [B, H, T]
    return pooled.mean(dim=(1, 2))


class LogitRecorder:
    """Collects each selected layer's [B] values during one UNet call. One object for every clone (the newest
    host shares it, __deepcopy__ makes older hosts share it), so a clone's taps still record here."""

    def __init__(self) -> None:
        self.values: dict[tuple, torch.Tensor] = {}

    def __deepcopy__(self, memo: dict) -> "LogitRecorder":
        return self

    def clear(self) -> None:
        self.values = {}


class LogitTap:
    """attn2 replace patch: records the layer's pooled logits, then returns the attention the layer would
    have computed (a replace patch already on the key is wrapped and called, not dropped)."""

    def __init__(
        self,
        key: tuple,
        lam: float,
        recorder: LogitRecorder,
        attention: Callable[..., torch.Tensor],
        inner: Optional[Callable[..., torch.Tensor]] = None,
    ) -> None:
        self.key, self.lam, self.recorder, self.attention, self.inner = key, lam, recorder, attention, inner

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = int(extra_options["n_heads"])
        self.recorder.values[self.key] = pooled_logits(q, k, heads, self.lam)
        if self.inner is not None:
            return self.inner(q, k, v, extra_options)
        return self.attention(q, k, v, heads)

    def to(self, *args: Any, **kwargs: Any) -> "LogitTap":
        """Immutable, as clones share it: a wrapped patch that moves to a new object gives a new tap."""
        moved = self.inner.to(*args, **kwargs) if self.inner is not None and hasattr(self.inner, "to") else self.inner
        return self if moved is self.inner else LogitTap(self.key, self.lam, self.recorder, self.attention, moved)

    def models(self) -> list:
        return self.inner.models() if self.inner is not None and hasattr(self.inner, "models") else []
