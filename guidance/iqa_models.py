"""IQA models: pyiqa no-reference metrics built by name, scored, tapped for activations.

One `IQAModel` (the IQA_MODEL type of the nodes) wraps one pyiqa InferenceModel built with as_loss=True
and loss_reduction='none': its forward then keeps gradients and returns one raw score per image. Scoring
here runs it under torch.inference_mode; gradient guidance scores a differentiable copy of its network
(differentiable_copies.pyiqa_term), the pack's one path for scores with gradients. The network is built
and moved only under inference_mode(False), so its parameters are ordinary tensors and autograd works
(activation taps with grad=True, the guidance's copies) even when the caller runs inside the host's
inference mode. It lives on a home device (CPU) and is moved to the compute device only for the duration
of a call.

Built models are kept in a small LRU cache here, keyed by what determines them, so that every graph
using a metric shares one copy; a cached model whose weight files changed on disk is rebuilt.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from ..adapter.errors import IQAAdapterError, load_error_detail
from ..adapter.norm_table import MetricStats, default_norm_table
from .metric_specs import MetricSpec, get_spec
from .weights import Backbones, WeightSource, arch_class, file_fingerprint, weight_gate

log = logging.getLogger(__name__)

CACHE_SIZE = 3  # IQA networks are 10 MB to 1.7 GB each
_CACHE: "OrderedDict[tuple, IQAModel]" = OrderedDict()
_CACHE_LOCK = threading.RLock()
CPU = torch.device("cpu")


class _TapsDone(Exception):
    """Raised from a forward hook once every requested tap has fired, to skip the rest of the network."""


@dataclass(eq=False)
class IQAModel:
    """IQA_MODEL: a built pyiqa no-reference metric plus the facts the pack needs about it."""

    name: str
    spec: MetricSpec
    metric: Any  # pyiqa.models.inference_model.InferenceModel (as_loss=True, loss_reduction='none')
    stats: MetricStats | None  # CC3M normalization statistics, where the table has the metric
    random_weights: bool = False  # set by builders of stand-ins (tests, benchmarks): no weight file was read
    files: tuple[tuple[str, str], ...] = ()  # (path, url) of every weight file read
    home: torch.device = CPU  # where the network waits between calls
    fingerprint: tuple = ()
    compute: torch.device | None = None  # where calls run by default (None: the home device)
    _hidden: list[torch.nn.Module] = field(default_factory=list, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def lower_better(self) -> bool:
        return self.spec.lower_better

    @property
    def differentiable(self) -> bool:
        return self.spec.differentiable

    @property
    def score_range(self) -> tuple[float, float]:
        return self.spec.score_range

    @property
    def net(self) -> torch.nn.Module:
        return self.metric.net

    def __deepcopy__(self, memo: dict) -> "IQAModel":
        # A handle to a shared network: older hosts deep-copy model_options on every clone, and a hook that
        # holds an IQA_MODEL must not duplicate the network (nor can it copy the lock).
        return self

    def __repr__(self) -> str:
        w = "random weights" if self.random_weights else f"{len(self.files)} weight file(s)"
        return f"IQAModel({self.name}, {w}, {'lower' if self.lower_better else 'higher'} is better)"

    # -- devices -------------------------------------------------------------------------------------------
    def _move(self, device: torch.device) -> None:
        with torch.inference_mode(False):
            self.metric.to(device)
            for m in self._hidden:  # networks pyiqa keeps in plain lists (CLIP in CLIP-IQA and LAION-Aes)
                m.to(device)

    def with_device(self, compute: torch.device | str | None) -> "IQAModel":
        """A view of this model (same network, same lock) whose calls run on `compute` by default."""
        return dataclasses.replace(self, compute=torch.device(compute) if compute is not None else None)

    @contextmanager
    def on_device(self, device: torch.device | str | None = None) -> Iterator[Any]:
        """The pyiqa metric on `device` (default: the compute device) for the block, back home after."""
        target = torch.device(device) if device is not None else (self.compute or self.home)
        with self._lock:
            moved = target != self.home
            if moved:
                self._move(target)
            try:
                yield self.metric
            finally:
                if moved:
                    self._move(self.home)

    # -- scoring -------------------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """Errors for what the metric cannot score or embed (call after to_rgb_nchw, before any resize)."""
        if images.shape[0] == 0:
            raise IQAAdapterError(f"No images for '{self.name}': the batch is empty. Connect at least one image.")
        h, w = images.shape[-2:]
        if min(h, w) < self.spec.min_side:
            raise IQAAdapterError(
                f"Images of {w}x{h} px are too small for '{self.name}', which needs at least {self.spec.min_side} px "
                "on the short side. Upscale them first (e.g. with an Upscale Image node)."
            )

    def score(
        self,
        images: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 0,
        progress: Callable[[int], None] | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """Raw metric scores on the CPU, one per image, of images in [0, 1]: NCHW, or host IMAGEs [B, H, W, C]
        with channels_last=True (converted here, once, by to_rgb_nchw). Runs under inference_mode: scores with
        gradients come from the guidance's differentiable copy (differentiable_copies.pyiqa_term).

        batch_size > 0 scores that many images per call; progress(n) is called after each call.
        """
        out = []
        with self.on_device(device) as metric, torch.inference_mode():
            images = to_rgb_nchw(images, channels_last=channels_last)
            self.check_images(images)
            step = batch_size if batch_size and batch_size > 0 else images.shape[0]
            dev = metric.dummy_param.device
            for i in range(0, images.shape[0], step):
                chunk = images[i : i + step]
                out.append(_per_image(metric(chunk.to(dev)), chunk.shape[0], self.name).float().cpu())
                if progress is not None:
                    progress(chunk.shape[0])
        return torch.cat(out)

    # -- activations ---------------------------------------------------------------------------------------
    def activations(
        self,
        images: torch.Tensor,
        layers: Sequence[str] | None = None,
        *,
        grad: bool = False,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Outputs of the named submodules of metric.net (default: the spec's taps) for NCHW images, prepared
        by the caller (to_rgb_nchw, resizing, any normalization: they reach the network as given).

        The metric's own forward runs (its own resizing and normalization), with forward hooks on the taps;
        it stops as soon as every tap has fired, so early taps cost only the early layers.
        """
        layers = list(layers or self.spec.taps)
        if not layers:
            raise IQAAdapterError(f"IQA metric '{self.name}' has no default activation taps; name the layers to tap.")
        modules = dict(self.net.named_modules())
        for path in layers:
            if path not in modules:
                close = difflib.get_close_matches(path, list(modules), n=3)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise IQAAdapterError(f"IQA metric '{self.name}' has no layer '{path}'.{hint}")
        self.check_images(images)
        captured: dict[str, torch.Tensor] = {}

        def hook_for(path: str):
            def hook(_module, _inputs, output):
                if path not in captured:
                    captured[path] = output[0] if isinstance(output, (tuple, list)) else output
                if len(captured) == len(layers):
                    raise _TapsDone

            return hook

        with self.on_device(device) as metric:
            handles = [modules[p].register_forward_hook(hook_for(p)) for p in layers]
            mode = torch.inference_mode(False) if grad else torch.inference_mode()
            try:
                with mode, torch.set_grad_enabled(grad):
                    x = images.clone() if grad and images.is_inference() else images
                    try:
                        metric(x.to(metric.dummy_param.device))
                    except _TapsDone:
                        pass
            finally:
                for h in handles:
                    h.remove()
        missing = [p for p in layers if p not in captured]
        if missing:
            raise IQAAdapterError(f"IQA metric '{self.name}' never ran layer(s) {missing} on these images.")
        return {p: captured[p] for p in layers}


def _per_image(out: Any, n: int, name: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    out = torch.as_tensor(out)
    if out.numel() != n:
        raise RuntimeError(
            f"IQA metric '{name}' returned {out.numel()} values for {n} images (shape {tuple(out.shape)})."
        )
    return out.reshape(n)


def to_rgb_nchw(images: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """Images as float RGB NCHW in [0, 1], with documented conversions.

    Host IMAGEs are [B, H, W, C] (channels_last); a single [H, W, C] image becomes a batch of one.
    Greyscale (1 channel) is repeated to RGB; grey+alpha and RGBA drop the alpha channel (it is ignored,
    not composited). Values outside [0, 1] are clamped; NaN or infinite values are an error.
    """
    if not torch.is_tensor(images):
        raise IQAAdapterError(f"Expected an image tensor, got {type(images).__name__}.")
    if images.ndim == 3 and channels_last and images.shape[-1] not in (1, 2, 3, 4):
        raise IQAAdapterError(
            f"Got a tensor of shape {list(images.shape)}, which is a MASK ([B, H, W]), not an IMAGE ([B, H, W, C]). "
            "Connect an image, or turn the mask into one with a Convert Mask to Image node."
        )
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise IQAAdapterError(f"Expected an image batch [B, H, W, C], got shape {tuple(images.shape)}.")
    if channels_last:
        images = images.movedim(-1, 1)
    c = images.shape[1]
    if c in (2, 4):
        images = images[:, : c - 1]
        c -= 1
    if c == 1:
        images = images.expand(-1, 3, -1, -1)
    elif c != 3:
        raise IQAAdapterError(
            f"Images of shape {list(images.movedim(1, -1).shape if channels_last else images.shape)} have "
            f"{c} channels; give RGB, RGBA or greyscale images ([B, H, W, C] with C = 1-4)."
        )
    if not images.is_floating_point():
        images = images.float()
    if images.numel() and not torch.isfinite(images.detach()).all():
        raise IQAAdapterError("Images contain NaN or infinite values; check the node that made them.")
    return images.float().clamp(0.0, 1.0)


def hidden_modules(root: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules that pyiqa keeps in plain lists (so that .to() and state_dict skip them)."""
    found: dict[int, torch.nn.Module] = {}
    for m in root.modules():
        for value in vars(m).values():
            if isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, torch.nn.Module):
                        found[id(item)] = item
    return list(found.values())


def pyiqa_network_type(name: str) -> str:
    """pyiqa's network class name of a metric (its strict loads are the metric's checkpoint)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS[name]["metric_opts"]["type"]


def create_metric(spec: MetricSpec, source: WeightSource, backbones: Backbones, **options: Any) -> Any:
    """pyiqa's metric as the pack scores with it (as_loss: gradients kept, one raw score per image), built on
    the CPU outside inference mode inside the weight gate; a failure names the file that was read last.

    backbones.checkpoint_type is filled in here: importing the network's module before the gate opens lets
    the gate swap the names that module bound.
    """
    import pyiqa

    try:
        with torch.inference_mode(False):
            if backbones.checkpoint_type is None:
                backbones.checkpoint_type = arch_class(pyiqa_network_type(spec.name))
            with weight_gate(source, backbones):
                return pyiqa.create_metric(spec.name, as_loss=True, loss_reduction="none", device=CPU, **options)
    except IQAAdapterError:
        raise
    except Exception as e:  # noqa: BLE001 - anything a broken file or library raises
        raise _build_error(spec.name, source, e) from e


def wrap_metric(
    spec: MetricSpec,
    metric: Any,
    *,
    files: Sequence[tuple[str, str]] = (),
    random_weights: bool = False,
    home: torch.device | str = CPU,
) -> IQAModel:
    """A built pyiqa metric as an IQA_MODEL: eval mode, no parameter gradients (gradients are wanted with
    respect to images only), the CC3M statistics where the table has them, then moved to `home`."""
    hidden = hidden_modules(metric.net)
    with torch.inference_mode(False):
        for m in [metric, *hidden]:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            _detach_tensor_attributes(m)
    table = default_norm_table()
    model = IQAModel(
        spec.name,
        spec,
        metric,
        table.get(spec.name) if spec.name in table else None,
        random_weights=random_weights,
        files=tuple(files),
        home=CPU,
        fingerprint=file_fingerprint([p for p, _ in files]),
        _hidden=hidden,
    )
    home = torch.device(home)
    if home != CPU:
        model._move(home)
        model.home = home
    log.info("Built %r", model)
    return model


def _detach_tensor_attributes(root: torch.nn.Module) -> None:
    """Plain tensor attributes computed while the metric was built (LIQE's text features, when its cache is
    empty) hang on to an autograd graph through the weights: detach them, so that the network holds no graph
    and the guidance's copies hold none."""
    for m in root.modules():
        for key, value in list(vars(m).items()):
            if torch.is_tensor(value) and not isinstance(value, torch.nn.Parameter) and value.grad_fn is not None:
                m.__dict__[key] = value.detach()


def build_iqa_model(
    name: str, *, search_dirs: Sequence[str] = (), allow_download: bool = False, home: torch.device | str = CPU
) -> IQAModel:
    """Build a metric (uncached). Weights: search_dirs first, then pyiqa's cache, the network only if allowed."""
    spec = get_spec(name)
    source = WeightSource(
        search_dirs=tuple(str(d) for d in search_dirs), allow_download=allow_download, metric=spec.name
    )
    backbones = Backbones(skip=spec.backbone_in_checkpoint)
    metric = create_metric(spec, source, backbones)
    if backbones.skip and backbones.strict_checkpoint_loads == 0:
        raise RuntimeError(
            f"IQA metric '{spec.name}' is marked backbone_in_checkpoint, but its checkpoint was not "
            "loaded strictly into the whole network; its backbone would stay random. Fix its spec."
        )
    return wrap_metric(spec, metric, files=source.used_files, home=home)


def _build_error(name: str, source: WeightSource, e: Exception) -> IQAAdapterError:
    if not source.used_files:
        return IQAAdapterError(f"Building IQA metric '{name}' failed: {type(e).__name__}: {e}")
    path, url = source.used_files[-1]
    detail = load_error_detail(e)
    return IQAAdapterError(
        f"Could not load IQA metric '{name}' from '{path}' ({detail}). The file is corrupt, "
        f"truncated (an interrupted download?) or not this metric's. Replace it with a fresh copy"
        f"{' from ' + url if url else ''}. Files read: {', '.join(p for p, _ in source.used_files)}."
    )


def cached_model(key: tuple, build: Callable[[], IQAModel]) -> IQAModel:
    """The shared LRU cache: one model per key, built on a miss; a hit whose weight files changed on disk is
    rebuilt. Keys start with the kind of build, so that builders other than load_iqa_model can share it."""
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and file_fingerprint([p for p, _ in hit.files]) == hit.fingerprint:
            _CACHE.move_to_end(key)
            return hit
        if hit is not None:
            log.info("Weight files of %s changed on disk; rebuilding it", hit.name)
            del _CACHE[key]
        model = build()
        _CACHE[key] = model
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model


def load_iqa_model(
    name: str, *, search_dirs: Sequence[str] = (), allow_download: bool = False, home: torch.device | str = CPU
) -> IQAModel:
    """build_iqa_model through the shared LRU cache: one copy per metric and weight source."""
    spec = get_spec(name)
    dirs = tuple(str(d) for d in search_dirs)
    return cached_model(
        ("files", spec.name, dirs, str(torch.device(home))),
        lambda: build_iqa_model(spec.name, search_dirs=dirs, allow_download=allow_download, home=home),
    )


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def cached_models() -> list[IQAModel]:
    with _CACHE_LOCK:
        return list(_CACHE.values())


def finite_or_nan(values: Sequence[float] | None, n: int) -> list[float]:
    """A per-image list for node outputs: NaN where a value does not exist."""
    return [float(v) for v in values] if values is not None else [math.nan] * n
