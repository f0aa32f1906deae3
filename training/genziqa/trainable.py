"""The trainable part of a GenzIQA file: the context vectors per text encoder and the attn2 LoRA.

Training cannot use the scorer's LoRA route (host weight patches, which carry no gradient), so the LoRA
runs as forward hooks on the frozen UNet's attn2 to_q / to_k / to_v / to_out.0 while a step runs:
output + (alpha / rank) * up(down(x)), which is what the host's LoRA loader computes from the exported file.
forward() returns the weights themselves, so a step takes them through the (DDP-wrapped) module and
accelerate synchronises their gradients.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from training.common.core import guidance
from training.common.errors import TrainingError


def _add_lora(down: torch.Tensor, up: torch.Tensor, scale: float, module: Any, inputs: tuple, output: torch.Tensor):
    x = inputs[0]
    return output + (F.linear(F.linear(x.to(down.dtype), down), up) * scale).to(output.dtype)


class TrainableGenzIQA(nn.Module):
    def __init__(self, file: Any, unet: nn.Module) -> None:
        super().__init__()
        fmt = guidance("genziqa.file_format")
        selection = guidance("genziqa.layer_selection")
        modules = dict(unet.named_modules())
        targets = {}
        for path in selection.attn2_module_paths(unet).values():
            for proj in fmt.LORA_PROJECTIONS:
                targets[fmt.lora_key(path, proj)] = modules[f"{path}.{proj}"]
        self.file = file
        self.encoders = sorted(file.context)
        self.ctx = nn.ParameterDict({k: nn.Parameter(file.context[k].float().clone()) for k in self.encoders})
        self.keys = sorted(k[: -len(".lora_down.weight")] for k in file.lora if k.endswith(".lora_down.weight"))
        unknown = [k for k in self.keys if k not in targets]
        if unknown:
            raise TrainingError(f"internal: LoRA '{unknown[0]}' names no attn2 projection of this UNet.")
        self._targets = [targets[k] for k in self.keys]  # a plain list: the UNet's modules are not ours
        self.down = nn.ParameterList(
            [nn.Parameter(file.lora[k + ".lora_down.weight"].float().clone()) for k in self.keys]
        )
        self.up = nn.ParameterList([nn.Parameter(file.lora[k + ".lora_up.weight"].float().clone()) for k in self.keys])
        self.alpha = [
            float(file.lora.get(k + ".alpha", torch.tensor(float(d.shape[0])))) for k, d in zip(self.keys, self.down)
        ]

    def forward(self) -> dict[str, Any]:
        return {"ctx": {k: self.ctx[k] for k in self.encoders}, "down": list(self.down), "up": list(self.up)}

    @contextlib.contextmanager
    def lora_on_unet(self, weights: dict[str, Any]) -> Iterator[None]:
        """The LoRA as forward hooks on the UNet's projections while the block runs, removed after."""
        handles = []
        try:
            for module, down, up, alpha in zip(self._targets, weights["down"], weights["up"], self.alpha):
                scale = alpha / down.shape[0]
                handles.append(module.register_forward_hook(functools.partial(_add_lora, down, up, scale)))
            yield
        finally:
            for h in handles:
                h.remove()

    def flat_state(self) -> dict[str, torch.Tensor]:
        """The weights under the GenzIQA file's tensor names (what a checkpoint stores)."""
        prefix = guidance("genziqa.file_format").CTX_PREFIX
        out = {prefix + k: self.ctx[k].detach().contiguous() for k in self.encoders}
        for key, down, up, alpha in zip(self.keys, self.down, self.up, self.alpha):
            out[key + ".lora_down.weight"] = down.detach().contiguous()
            out[key + ".lora_up.weight"] = up.detach().contiguous()
            out[key + ".alpha"] = torch.tensor(alpha)
        return out

    def to_file(self, **meta: Any) -> Any:
        """A GenzIQAFile with the trained weights (and the given metadata changes, e.g. the calibration)."""
        fmt = guidance("genziqa.file_format")
        state = {k: v.float().cpu() for k, v in self.flat_state().items()}
        context = {k[len(fmt.CTX_PREFIX) :]: v for k, v in state.items() if k.startswith(fmt.CTX_PREFIX)}
        lora = {k: v for k, v in state.items() if not k.startswith(fmt.CTX_PREFIX)}
        return fmt.GenzIQAFile(self.file.meta, context, lora, self.file.name).with_meta(**meta)
