"""The trainable part of an IQA-Adapter: the quality projection and each attn2 layer's to_k_ip/to_v_ip.

Its state_dict keys are the IP-Adapter flat format itself ("image_proj.proj.weight",
"ip_adapter.{2n+1}.to_k_ip.weight"), so export is a cast and a save, and Load IQA-Adapter reads the
result with no renaming. Its forward maps encoded quality vectors to every layer's K/V; running that
forward through the (DDP-wrapped) module is what lets accelerate synchronise the gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from adapter.checkpoint import AdapterSpec, infer_spec, layer_weights, load_state_dict
from adapter.errors import IQAAdapterError
from adapter.layers import AttnSite, match_sites
from adapter.model import LayerKV
from adapter.projection import QualityProjection
from training.common.errors import TrainingError

MLP_INNER_DIM = 128  # the official "mlp" projection: Linear(d -> 128), GELU, Linear(128 -> T*C)


class IPLayer(nn.Module):
    """to_k_ip and to_v_ip of one cross-attention layer: Linear(cross_dim -> hidden), no bias."""

    def __init__(self, hidden: int, cross_dim: int):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_dim, hidden, bias=False)
        self.to_v_ip = nn.Linear(cross_dim, hidden, bias=False)


class TrainableAdapter(nn.Module):
    def __init__(self, spec: AdapterSpec):
        super().__init__()
        self.spec = spec
        self.image_proj = QualityProjection(spec)
        self.ip_adapter = nn.ModuleDict({str(2 * n + 1): IPLayer(h, c) for n, (h, c) in enumerate(spec.layer_shapes)})

    @classmethod
    def from_base(
        cls,
        layers: Sequence[tuple[AttnSite, nn.Module]],
        proj_type: str,
        num_tokens: int,
        input_dim: int,
        mlp_inner_dim: int = MLP_INNER_DIM,
    ) -> "TrainableAdapter":
        """A new adapter for this UNet: to_k_ip/to_v_ip start as copies of each layer's to_k/to_v (as the
        official script does), the projection at torch's default initialisation."""
        if not layers:
            raise TrainingError(
                "The base model has no cross-attention layers: IQA-Adapter needs an SD1.5/SDXL-style UNet."
            )
        cross = layers[0][0].context_dim
        spec = AdapterSpec(
            proj_type,
            num_tokens,
            input_dim,
            cross,
            tuple((s.hidden, s.context_dim) for s, _ in layers),
            mlp_inner_dim if proj_type == "mlp" else None,
        )
        module = cls(spec)
        with torch.no_grad():
            for n, (_, attn2) in enumerate(layers):
                ip = module.ip_adapter[str(2 * n + 1)]
                ip.to_k_ip.weight.copy_(attn2.to_k.weight.float())
                ip.to_v_ip.weight.copy_(attn2.to_v.weight.float())
        return module.requires_grad_(True)

    @classmethod
    def from_file(cls, path: Path, layers: Sequence[tuple[AttnSite, nn.Module]], extra: int = 0) -> "TrainableAdapter":
        """Fine-tune an existing IQA-Adapter file; it must fit the base model layer by layer.

        extra: how many of the last layers are ones the model declares beyond its UNet blocks (the toy's
        refiner, adapter/layers.py). A file made before the model had them may lack them; they then start as
        a new adapter's do, copies of the layer's to_k/to_v."""
        sites = [site for site, _ in layers]
        try:
            state = load_state_dict(path)
            spec = infer_spec(state, Path(path).name)
            grown = len(sites) - extra <= spec.num_layers < len(sites)
            match_sites(spec, sites[: spec.num_layers] if grown else sites, Path(path).name)
        except IQAAdapterError as exc:
            raise TrainingError(f"--init-adapter {path}: {exc}") from None
        module = cls.from_base(
            layers, spec.proj_type, spec.num_tokens, spec.input_dim, spec.mlp_inner_dim or MLP_INNER_DIM
        )
        flat = {f"image_proj.{k}": v.float() for k, v in state["image_proj"].items()}
        for n in range(spec.num_layers):
            wk, wv = layer_weights(state, n)
            flat[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = wk.float()
            flat[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = wv.float()
        missing, unexpected = module.load_state_dict(flat, strict=False)
        if unexpected or any(not k.startswith("ip_adapter.") for k in missing):
            raise TrainingError(f"--init-adapter {path}: its tensors do not fit ({(missing + unexpected)[:3]})")
        return module.requires_grad_(True)

    def forward(self, vectors: torch.Tensor) -> LayerKV:
        tokens = self.image_proj(vectors)
        layers = [self.ip_adapter[str(2 * n + 1)] for n in range(self.spec.num_layers)]
        return LayerKV(tuple(ip.to_k_ip(tokens) for ip in layers), tuple(ip.to_v_ip(tokens) for ip in layers))

    def flat_state(self, dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
        """The weights in the IP-Adapter flat layout, detached and contiguous, cast to dtype if given."""
        return {k: (v.detach().to(dtype) if dtype else v.detach()).contiguous() for k, v in self.state_dict().items()}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
