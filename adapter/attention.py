"""Decoupled cross-attention for the host's attn2 replace hook: one class, any number of adapters.

    out = Attn(q, K_text, V_text) + sum_i scale_i * window_i(sigma) * region_i * Attn(q, K_ip_i, V_ip_i)

q is shared; the host applies the layer's own to_out afterwards. One DecoupledCrossAttention object sits
on each attn2 key and holds a tuple of contributions, so stacked adapters (two Quality Conditions, a
Reference Quality Transfer) share it. A replace patch that was already on the key - another pack's - is
kept as `inner` and computes the base term, so it still runs; one that another node registers later under
the (block, id) key is found at call time (patch_watch.py) and runs the same way.

The quality term attends over 2-4 keys. It runs through torch's scaled_dot_product_attention on K/V cached
already split into heads, and is added to the base output in one kernel (torch.add with alpha, or addcmul
with the per-item sigma mask). On a GPU a sampling step of SDXL is close to bound by kernel launches, so
the number of kernels per layer, not arithmetic, is the cost (bench/gpu.py measures it).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .errors import IQAAdapterError
from .model import LayerKV
from .patch_watch import later_block_patch, record_site_run
from .region_mask import RegionMask

AttentionFn = Callable[..., torch.Tensor]


class QualityTokens:
    """One condition's per-layer K_ip/V_ip (positive rows and CFG-negative rows), scale, sigma window and
    optional region mask (region_mask.py).

    Immutable, and one object for every clone of the model: the newest hosts share it (clone() copies only
    the dicts and lists of model_options), and __deepcopy__ returning self makes older hosts' deep copy share
    it too. The only state is a cache of the K/V cast to the device, dtype and batch layout in use, a pure
    function of those keys, so any clone may fill it for all.
    """

    def __init__(
        self,
        cond: LayerKV,
        uncond: LayerKV,
        scale: float,
        sigma_start: Optional[float] = None,
        sigma_end: Optional[float] = None,
        label: str = "IQA-Adapter",
        rows_name: str = "targets",
        mask: Optional[RegionMask] = None,
    ):
        if cond.batch != uncond.batch and uncond.batch != 1:
            raise ValueError("uncond rows must be 1 or match the cond rows")
        self.cond, self.uncond, self.scale = cond, uncond, float(scale)
        self.sigma_start, self.sigma_end, self.label, self.rows_name = sigma_start, sigma_end, label, rows_name
        self.mask = mask
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._weight: Optional[tuple] = None  # (sigmas tensor, dtype, device, weight) of the last call

    def __deepcopy__(self, memo: dict) -> "QualityTokens":
        return self

    @torch.inference_mode(False)
    @torch.no_grad()
    def with_layer_weights(self, weights: Sequence[float]) -> "QualityTokens":
        """A copy whose layer n term is weights[n] times this one's: the term is linear in V_ip, so V_ip is scaled
        once here (both branches) and per-block weights cost nothing per step. Weight 1 keeps the tensor as is. Made outside inference mode,
        like the K/V themselves (model.py), so a UNet run with gradients may still use them."""

        def scaled(kv: LayerKV) -> LayerKV:
            return LayerKV(kv.keys, tuple(v if w == 1.0 else v * w for v, w in zip(kv.values, weights)))

        return QualityTokens(
            scaled(self.cond),
            scaled(self.uncond),
            self.scale,
            self.sigma_start,
            self.sigma_end,
            label=self.label,
            rows_name=self.rows_name,
            mask=self.mask,
        )

    @property
    def silent(self) -> bool:
        """Whether the term adds nothing anywhere: scale 0, or a mask of zeros (patching.py then leaves the
        model unpatched, so both cost nothing per step)."""
        return self.scale == 0.0 or (self.mask is not None and self.mask.all_zeros)

    @property
    def windowed(self) -> bool:
        return self.sigma_start is not None or self.sigma_end is not None

    def _rows(self, kv: LayerKV, layer: int, per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = kv.keys[layer], kv.values[layer]
        if k.shape[0] == per_chunk:
            return k, v
        if k.shape[0] == 1:
            return k.expand(per_chunk, -1, -1), v.expand(per_chunk, -1, -1)
        raise IQAAdapterError(
            f"{self.label} has {k.shape[0]} {self.rows_name} but the latent batch is {per_chunk}. "
            f"Use a batch of {k.shape[0]} latents (e.g. Empty Latent Image batch_size={k.shape[0]}) or a single one."
        )

    def kv(
        self,
        layer: int,
        cond_or_uncond: tuple[int, ...],
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        heads: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K_ip, V_ip for a host batch made of len(cond_or_uncond) equal chunks: [B, T, C], or with heads > 0
        split into [B, heads, T, C/heads] as scaled_dot_product_attention takes them."""
        key = (layer, cond_or_uncond, batch, device, dtype, heads)
        hit = self._cache.get(key)
        if hit is None:
            if heads:
                k, v = self.kv(layer, cond_or_uncond, batch, device, dtype)
                hit = tuple(t.view(batch, t.shape[1], heads, -1).transpose(1, 2) for t in (k, v))
            else:
                per_chunk = batch // len(cond_or_uncond)
                parts = [self._rows(self.uncond if c == 1 else self.cond, layer, per_chunk) for c in cond_or_uncond]
                hit = (
                    torch.cat([p[0] for p in parts]).to(device=device, dtype=dtype),
                    torch.cat([p[1] for p in parts]).to(device=device, dtype=dtype),
                )
            self._cache[key] = hit
        return hit

    def weight(
        self, extra_options: dict, dtype: torch.dtype, device: torch.device, batch: int = 0, n_tokens: int = 0
    ) -> Union[float, torch.Tensor]:
        """The term's weight for a call: scale, times the window (when windowed, 1 where the item's sigma lies in
        [sigma_end, sigma_start], else 0, as [B,1,1,1]), times the mask on the call's n_tokens positions (with a
        mask, as [B,N,1,1])."""
        w = self._window(extra_options, dtype, device)
        if self.mask is None:
            return w
        layout = tuple(extra_options.get("cond_or_uncond") or (0,))
        region = self.mask.weights(n_tokens, extra_options.get("original_shape"), layout, batch, device, dtype)
        return region * w

    def _window(self, extra_options: dict, dtype: torch.dtype, device: torch.device) -> Union[float, torch.Tensor]:
        """scale, or the windowed [B,1,1,1] weight. Made once per model call: every layer of one call sees the
        same sigmas tensor, so the result is reused while that object is current."""
        sigmas = extra_options.get("sigmas")
        if not self.windowed or sigmas is None:
            return self.scale
        last = self._weight
        if last is not None and last[0] is sigmas and last[1] == dtype and last[2] == device:
            return last[3]
        active = torch.ones_like(sigmas, dtype=torch.bool)
        if self.sigma_start is not None:
            active &= sigmas <= self.sigma_start
        if self.sigma_end is not None:
            active &= sigmas >= self.sigma_end
        w = (active.to(dtype) * self.scale).to(device).view(-1, 1, 1, 1)
        self._weight = (sigmas, dtype, device, w)
        return w


class DecoupledCrossAttention:
    """The attn2 replace patch: base attention (or the wrapped foreign patch) plus quality terms.

    Immutable after creation: the newest host's clone() shares patch objects between a model and its
    clones, so nothing here may change in place (adding a contribution or moving it makes a new object)."""

    is_iqa_adapter_patch = True

    def __init__(self, contributions: tuple[tuple[QualityTokens, int], ...], attention: AttentionFn, inner: Any = None):
        self.contributions = contributions
        self.attention = attention
        self.inner = inner

    def with_contribution(self, tokens: QualityTokens, layer: int) -> "DecoupledCrossAttention":
        return DecoupledCrossAttention(self.contributions + ((tokens, layer),), self.attention, self.inner)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        record_site_run(extra_options)
        base = later_block_patch(extra_options, self.inner) or self.inner
        if base is not None:
            out = base(q, k, v, extra_options)
        else:
            out = self.attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))
        b, n, c = q.shape
        qh = q.view(b, n, heads, c // heads).transpose(1, 2)  # a view: [B, heads, N, d]
        acc = out.view(b, n, heads, c // heads)
        layout = tuple(extra_options.get("cond_or_uncond") or (0,))
        for tokens, layer in self.contributions:
            k_ip, v_ip = tokens.kv(layer, layout, b, q.device, q.dtype, heads)
            term = F.scaled_dot_product_attention(qh, k_ip, v_ip).transpose(1, 2)  # [B, N, heads, d]
            w = tokens.weight(extra_options, term.dtype, term.device, b, n)
            acc = torch.add(acc, term, alpha=w) if isinstance(w, float) else torch.addcmul(acc, term, w)
        return acc.reshape(b, n, c)

    def to(self, *args, **kwargs) -> "DecoupledCrossAttention":
        """The host moves patches with .to(device) / .to(dtype) and stores what this returns in the clone's own
        table; K/V are cast lazily per device and dtype. A wrapped patch that moves to a new object gives a
        new patch, so clones that share this one keep theirs."""
        moved = self.inner.to(*args, **kwargs) if self.inner is not None and hasattr(self.inner, "to") else self.inner
        return self if moved is self.inner else DecoupledCrossAttention(self.contributions, self.attention, moved)

    def models(self) -> list:
        return self.inner.models() if hasattr(self.inner, "models") else []
