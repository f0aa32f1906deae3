"""Differentiable copies of host decoders and IQA networks, made outside torch.inference_mode.

The prompt runs under torch.inference_mode, so weights loaded by loader nodes are inference tensors and
cannot be saved for backward. materialize() rebuilds a module under inference_mode(False) as a fresh
module of the same class: every parameter and buffer is converted straight to the target device, dtype and
memory format (one copy, no intermediate one on the source device). The copy never gets parameter
gradients (requires_grad False), and the original is not touched.

Nothing is deep-copied. A host that streams weights (ComfyUI's dynamic VRAM, comfy-aimdo) hangs run-time
state on its modules: private attributes holding pinned host buffers, hooks, objects that may refuse a
deep copy. The rebuild takes only what a module's forward reads: registered parameters and buffers,
submodules, plain values (numbers, strings, dtypes, functions, classes and containers of them), public tensor
attributes (pyiqa's normalization constants; converted like buffers), public objects (shared, not copied)
and the forward hooks a network installs on itself (pyiqa's MANIQA reads its ViT blocks' outputs through
them; shared). Private tensors, private objects and hooks installed by the host's packages (comfy,
comfy_aimdo, comfy_kitchen) are the host's run-time state and are left behind.

Reduced-precision copies (bfloat16/float16) also use channels_last, the layout that the fast low-precision
convolution kernels want. float32 copies keep the default layout: on this project's CPU, channels_last made
the fp32 gradient 1.12-1.22x faster (bench/guidance_precision.py) but moved it 7e-4 (relative) away from a
float64 reference, against 1.3e-6 in the default layout, and fp32 is the exact mode.
"""

from __future__ import annotations

import enum
import functools
import types
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Optional

import torch

from .gradient_guidance import DecoderSource, ImageFn, ScoreTerm
from .iqa_models import hidden_modules

# Submodules a decode never runs; left out of the copy (the KL VAE's encoder is 34M parameters).
_ENCODER_NAMES = ("encoder", "taesd_encoder", "quant_conv")

# "auto": decoder in the VAE's own dtype (the host picks it per device: float32 on CPU, bf16/fp16 on most
# GPUs), metric in float32. "float32": both in float32. "bfloat16": decoder copy in bfloat16, metric under
# autocast to bfloat16 (about 3x faster on CPUs with AMX; the gradient direction moves by a few percent).
PRECISIONS = ("auto", "float32", "bfloat16")


def _converted(
    t: torch.Tensor, device: Optional[torch.device], dtype: Optional[torch.dtype], channels_last: bool
) -> torch.Tensor:
    """A normal (non-inference) copy of t on device/dtype (dtype only for floating tensors), 4-D in channels_last."""
    fmt = torch.channels_last if channels_last and t.dim() == 4 else torch.preserve_format
    return t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None, copy=True, memory_format=fmt)


_PLAIN = (
    type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size, enum.Enum, type,
    types.FunctionType, types.BuiltinFunctionType, functools.partial,
)  # fmt: skip
_CONTAINERS = (tuple, list, dict, set, frozenset)


def _plain(value: Any) -> bool:
    """A value with no tensors, modules or foreign objects in it (safe to share or rebuild as is)."""
    if type(value) in _CONTAINERS:
        items = value.items() if isinstance(value, dict) else ((v, v) for v in value)
        return all(_plain(k) and _plain(v) for k, v in items)
    return isinstance(value, _PLAIN)


class _Rebuild:
    """One rebuild: a memo by id, so tied weights and shared submodules stay shared in the copy."""

    def __init__(self, convert: Callable[[torch.Tensor], torch.Tensor], dropped: set[int]):
        self.convert, self.dropped, self.memo = convert, dropped, {}

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if id(t) not in self.memo:
            out = self.convert(t)
            self.memo[id(t)] = (
                torch.nn.Parameter(out, requires_grad=False) if isinstance(t, torch.nn.Parameter) else out
            )
        return self.memo[id(t)]

    def module(self, m: torch.nn.Module) -> torch.nn.Module:
        if id(m) in self.memo:
            return self.memo[id(m)]
        if isinstance(m, torch.jit.ScriptModule):
            self.memo[id(m)] = self.script_module(m)
            return self.memo[id(m)]
        new = type(m).__new__(type(m))
        torch.nn.Module.__init__(new)  # empty hook tables and registries
        self.memo[id(m)] = new
        new.training = m.training
        for name, p in m._parameters.items():
            new._parameters[name] = None if p is None else self.tensor(p)
        for name, b in m._buffers.items():
            new._buffers[name] = None if b is None else self.tensor(b)
        new._non_persistent_buffers_set = set(m._non_persistent_buffers_set)
        _keep_own_hooks(m, new)
        for name, child in m._modules.items():
            new._modules[name] = None if child is None or id(child) in self.dropped else self.module(child)
        own = vars(new)
        for name, value in vars(m).items():
            if name in own:
                continue
            if name.startswith("_") and not _plain(value):
                continue  # run-time state a host attached (pinned buffers, streaming handles)
            object.__setattr__(new, name, self.value(value))
        return new

    def script_module(self, m: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
        """A TorchScript module (pyiqa ships some, e.g. ARNIQA's regressor) keeps its weights inside its compiled
        object, so it cannot be rebuilt field by field; it is deep-copied instead. That is safe here: the host
        loads no TorchScript module, so none carries its streaming state. Its tensors are then replaced by
        converted copies, as every other module's are."""
        import copy

        new = copy.deepcopy(m)
        for name, t in list(new.named_parameters()) + list(new.named_buffers()):
            owner = new.get_submodule(name.rpartition(".")[0]) if "." in name else new
            setattr(owner, name.rpartition(".")[2], self.tensor(t))
        return new

    def value(self, v: Any) -> Any:
        """A public attribute's value: modules rebuilt, tensors converted, containers rebuilt, the rest shared."""
        if isinstance(v, torch.nn.Module):
            return self.module(v)
        if torch.is_tensor(v):
            return self.tensor(v)
        if type(v) is dict:
            return {k: self.value(x) for k, x in v.items()}
        if type(v) in (list, tuple, set, frozenset):
            return type(v)(self.value(x) for x in v)
        return v


_HOST_PACKAGES = ("comfy", "comfy_aimdo", "comfy_kitchen")
_HOOK_TABLES = (  # (hook table, its per-hook flag tables)
    ("_forward_pre_hooks", ("_forward_pre_hooks_with_kwargs",)),
    ("_forward_hooks", ("_forward_hooks_with_kwargs", "_forward_hooks_always_called")),
)


def _from_host(fn: Any) -> bool:
    """A hook whose code is the host's (weight streaming, casting), not the network's own."""
    fn = getattr(fn, "func", fn)  # functools.partial
    module = getattr(fn, "__module__", None) or type(fn).__module__ or ""
    return module.split(".")[0] in _HOST_PACKAGES


def _keep_own_hooks(old: torch.nn.Module, new: torch.nn.Module) -> None:
    """Forward hooks the network installed on itself carry over (shared callables); the host's do not."""
    for table, flags in _HOOK_TABLES:
        for hid, fn in getattr(old, table).items():
            if not _from_host(fn):
                getattr(new, table)[hid] = fn
                for flag in flags:
                    if hid in getattr(old, flag):
                        getattr(new, flag)[hid] = getattr(old, flag)[hid]


def materialize(
    module: torch.nn.Module,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    drop: Iterable[str] = (),
    channels_last: bool = False,
) -> torch.nn.Module:
    """A copy of `module` usable by autograd under the host's inference mode, rebuilt without deep-copying
    anything; `drop` names children that the copy does without (None in it: neither copied nor shared)."""
    dropped = {id(c) for c in (getattr(module, n, None) for n in drop) if isinstance(c, torch.nn.Module)}
    with torch.inference_mode(False):
        out = _Rebuild(lambda t: _converted(t, device, dtype, channels_last), dropped).module(module)
        bad = [
            n
            for r in [out, *hidden_modules(out)]
            for n, t in list(r.named_parameters()) + list(r.named_buffers())
            if t.is_inference()
        ]
    if bad:
        raise RuntimeError(f"Could not re-materialize {type(module).__name__} outside inference mode: {bad[:3]}")
    return out.eval()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def vae_decoder(vae: Any, latent_format: Any, precision: str = "auto") -> DecoderSource:
    """The graph's VAE (KL or TAESD, both load as the host's VAE class) as a differentiable decoder.

    The host's VAE.decode runs without grad and clamps; this calls first_stage_model.decode directly on
    latent_format.process_out(x0). Both the KL VAE and TAESD's decode return images in about [-1, 1]
    (TAESD maps its [0,1] output with sub(0.5).mul(2)), so images = clamp((y + 1) / 2, 0, 1): what the
    user will see, and the clamp passes gradients for every pixel inside the range.
    """
    fsm = vae.first_stage_model
    own = getattr(vae, "vae_dtype", None) or next(fsm.parameters()).dtype
    dtype = {"auto": own, "float32": torch.float32, "bfloat16": torch.bfloat16}[precision]
    cl = dtype in (torch.bfloat16, torch.float16)

    def build(device: torch.device) -> ImageFn:
        net = materialize(fsm, device=device, dtype=dtype, drop=_ENCODER_NAMES, channels_last=cl)

        def decode(x0: torch.Tensor) -> torch.Tensor:
            z = latent_format.process_out(x0).to(dtype)
            y = net.decode(_channels_last(z) if cl else z).float()
            return ((y + 1.0) / 2.0).clamp(0.0, 1.0)

        return decode

    return DecoderSource(
        build, int(getattr(vae, "latent_channels", 4)), int(getattr(vae, "upscale_ratio", 8)), type(fsm).__name__
    )


def pyiqa_term(
    metric: Any,
    weight: float = 1.0,
    stats: Optional[tuple[float, float]] = None,
    name: Optional[str] = None,
    precision: str = "auto",
) -> ScoreTerm:
    """A pyiqa InferenceModel (as built by pyiqa.create_metric) as a differentiable score term.

    Calls the metric's network directly, as pyiqa's as_loss mode does (its forward otherwise runs under
    no_grad and asserts the input range), and returns its raw score per image. Weights stay float32;
    precision "bfloat16" runs the forward under autocast.
    """
    net = metric.net
    low = precision == "bfloat16"

    def build(device: torch.device) -> ImageFn:
        copy_ = materialize(net, device=device, channels_last=low)

        def score(images: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16) if low else nullcontext():
                out = copy_(_channels_last(images) if low else images)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.float().reshape(images.shape[0], -1).mean(1)

        return score

    return ScoreTerm(name or metric.metric_name, build, bool(metric.lower_better), float(weight), stats)
