"""IQAAdapter: a loaded checkpoint with its spec and metadata, and the one thing it computes.

The quality tokens do not depend on the noisy latent, so each layer's K_ip = tokens @ W_k^T and
V_ip = tokens @ W_v^T are constant for a whole sampling run. They are computed here once, in float32 on
the CPU, when a condition is built. The sampler then only needs these few small tensors; the adapter's
to_k_ip/to_v_ip weights never reach the GPU and are never copied by the host's model clones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .checkpoint import AdapterSpec, infer_spec, layer_weights, load_state_dict
from .embedding_spec import EmbeddingSpec
from .metadata import AdapterMetadata, header_norm_table, resolve_metadata, validate_metadata
from .norm_table import NormTable, default_norm_table
from .projection import QualityProjection


@dataclass(frozen=True)
class LayerKV:
    """Keys and values of the quality tokens for every cross-attention layer, [B, T, hidden] each."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]


class IQAAdapter:
    """A loaded IQA-Adapter. Immutable after loading; shared, never deep-copied (see __deepcopy__)."""

    def __init__(
        self,
        spec: AdapterSpec,
        metadata: AdapterMetadata,
        state: Mapping[str, Mapping[str, torch.Tensor]],
        name: str,
        embedding_spec: Optional[EmbeddingSpec] = None,
        norm_table: Optional[NormTable] = None,
    ):
        self.spec, self.metadata, self.name = spec, metadata, name
        self.norm_table = norm_table or default_norm_table()  # what percentile targets refer to
        self.projection = QualityProjection.from_state_dict(spec, state["image_proj"])
        self.embedding_spec = embedding_spec  # checked against the checkpoint by validate_metadata
        self._ip = [layer_weights(state, n) for n in range(spec.num_layers)]

    def __deepcopy__(self, memo: dict) -> "IQAAdapter":
        return self  # weights are read-only; the host's clone() must not duplicate them

    def __repr__(self) -> str:
        return f"IQAAdapter({self.name}: {self.spec.describe()}, metrics={list(self.metadata.metrics)})"

    @classmethod
    def load(
        cls, path: str | Path, override: Mapping[str, Any] | None = None, table: NormTable | None = None
    ) -> "IQAAdapter":
        path = Path(path)
        state = load_state_dict(path)
        spec = infer_spec(state, path.name)
        meta = resolve_metadata(path, override)
        table = table or header_norm_table(path) or default_norm_table()
        embedding = validate_metadata(meta, spec.input_dim, table, path.name)
        return cls(spec, meta, state, path.name, embedding, table)

    @torch.inference_mode(False)
    @torch.no_grad()
    def tokens(self, vectors: torch.Tensor) -> torch.Tensor:
        """Project [B, input_dim] encoded vectors to [B, num_tokens, cross_dim] quality tokens."""
        return self.projection(vectors.to(torch.float32))

    @torch.inference_mode(False)
    @torch.no_grad()
    def layer_kv(self, tokens: torch.Tensor) -> LayerKV:
        """K_ip and V_ip of the given tokens for every layer, in float32 (cast to the model's dtype at use)."""
        t = tokens.to(torch.float32)
        ks, vs = [], []
        for wk, wv in self._ip:
            ks.append(t @ wk.to(torch.float32).T)
            vs.append(t @ wv.to(torch.float32).T)
        return LayerKV(tuple(ks), tuple(vs))
