"""Where IQA weights come from: the `iqa` model folder, then pyiqa's cache, and the network only on request.

pyiqa, timm, torchvision and CLIP each fetch weights by URL when a metric is built, from whichever module
bound the fetch function. `weight_gate` swaps those functions, for the duration of one build, for ones that
ask two policy objects what to do:
- `WeightSource` (offline lookup): where a named file is on this machine, and whether it may be downloaded;
- `Backbones` (backbone skipping): for metrics whose own checkpoint is loaded strictly into the whole
  network, the backbone's ImageNet/CLIP weights would be overwritten anyway, so they are not read at all;
  it counts the strict checkpoint loads so that the build can check afterwards that one happened.
Each patched library has its own small hook class. The swap is done on every module that bound the function
(found by identity), so it also covers `from x import f` aliases. Beneath that, the raw downloaders are
swapped for ones that raise, so a fetch path that this module does not know about still cannot reach the
network unannounced, and torch.load reads with weights_only=True.

Builds with other policies (random weights for tests) subclass the two policy objects.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import torch

from ..adapter.errors import IQAAdapterError

log = logging.getLogger(__name__)

# Module trees whose bound names are searched for the functions to swap (plus torch.hub itself).
_SWAP_ROOTS = ("pyiqa", "timm", "torchvision", "clip", "facexlib")
_BUILD_LOCK = threading.RLock()  # the swaps are process-global: one build at a time
PINNED = "pyiqa 0.1.16 (requirements/iqa.txt)"  # the library versions whose private names the hooks use

# CLIP architectures pyiqa's metrics use (OpenAI CLIP model card facts), to build stand-ins for a backbone the
# metric's checkpoint overwrites, without reading CLIP's own file: embed_dim, image_resolution, vision_layers,
# vision_width, vision_patch_size, context_length, vocab_size, transformer_width, transformer_heads,
# transformer_layers.
CLIP_ARCHS: dict[str, tuple] = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
}


class MissingWeightsError(IQAAdapterError):
    """A weight file is needed that is in none of the places looked at, and downloading is off."""

    def __init__(self, file_name: str, url: str, folders: Sequence[str], looked: Sequence[str], metric: str):
        self.file_name, self.url = file_name, url
        where = folders[0] if folders else "models/iqa"
        super().__init__(
            f"IQA metric '{metric}' needs the weight file '{file_name}', which is not on this machine. "
            f"Put it in {where} (the 'iqa' model folder; extra_model_paths.yaml can add more), "
            f"or switch on allow_download in Load IQA Model. It comes from {url} . "
            f"Looked in: {', '.join(looked) or '(nowhere)'}."
        )


# -- policy: offline lookup ----------------------------------------------------------------------------------
@dataclass
class WeightSource:
    """Where one build may take weight files from, and the record of those it read."""

    search_dirs: tuple[str, ...] = ()  # the `iqa` model folder(s), searched first (recursively, by file name)
    allow_download: bool = False
    metric: str = ""  # for messages
    used_files: list[tuple[str, str]] = field(default_factory=list)  # (path, url) read by the build

    def find(self, file_name: str, cache_candidates: Sequence[str]) -> tuple[str | None, list[str]]:
        """The local copy of a file: the iqa folder first, then the caches the library itself would use."""
        looked: list[str] = []
        for d in self.search_dirs:
            looked.append(d)
            hit = _find_in_tree(d, file_name)
            if hit:
                return hit, looked
        for c in cache_candidates:
            if not c:
                continue
            looked.append(os.path.dirname(c))
            if os.path.isfile(c):
                return c, looked
        return None, looked

    def locate(
        self, file_name: str, url: str, cache_candidates: Sequence[str], also_looked: Sequence[str] = ()
    ) -> str | None:
        """The recorded local path of a file; None when it is absent and may be downloaded (the caller then
        calls download()); MissingWeightsError when it is absent and may not."""
        path, looked = self.find(file_name, cache_candidates)
        if path is not None:
            return self.record(path, url)
        if not self.allow_download:
            raise self.missing(file_name, url, [*looked, *also_looked])
        log.warning("Downloading %s for IQA metric %s (allow_download is on)", url, self.metric)
        return None

    def download(self, fetch: Callable[[], Any], name: str, url: str, record: str | None = None) -> Any:
        """Run an allowed download; a failure becomes an error that says where to put the file by hand."""
        try:
            result = fetch()
        except IQAAdapterError:
            raise
        except Exception as e:  # noqa: BLE001 - any network or disk failure
            where = self.search_dirs[0] if self.search_dirs else "models/iqa"
            raise IQAAdapterError(
                f"Downloading '{name}' for IQA metric '{self.metric}' from {url} failed ({type(e).__name__}: {e}). "
                f"Download it by hand and put it in {where}."
            ) from e
        if record:
            self.record(record, url)
        return result

    def missing(self, file_name: str, url: str, looked: Sequence[str]) -> MissingWeightsError:
        return MissingWeightsError(file_name, url, self.search_dirs, list(dict.fromkeys(looked)), self.metric)

    def record(self, path: str, url: str = "") -> str:
        self.used_files.append((os.path.abspath(path), url))
        log.info("IQA metric %s: using weights %s", self.metric, path)
        return path


def _find_in_tree(root: str, file_name: str) -> str | None:
    direct = os.path.join(root, file_name)
    if os.path.isfile(direct):
        return direct
    if not os.path.isdir(root):
        return None
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop (or a second link to a folder already searched)
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if file_name in filenames:
            return os.path.join(dirpath, file_name)
    return None


# -- policy: backbone skipping -------------------------------------------------------------------------------
@dataclass
class Backbones:
    """Which pretrained loads a build leaves at their initial weights.

    With skip=True every load but the metric's own checkpoint (a load into `checkpoint_type`, pyiqa's network
    class of the metric) is skipped; the strict checkpoint loads are counted, so the build can prove that the
    checkpoint did overwrite the skipped backbone.
    """

    checkpoint_type: type | None = None
    skip: bool = False
    strict_checkpoint_loads: int = 0

    def is_checkpoint(self, net: Any) -> bool:
        return self.checkpoint_type is not None and isinstance(net, self.checkpoint_type)

    def skips(self, net: Any = None) -> bool:
        """True if this load (into `net`; None: a backbone whose network is not known yet) is left out."""
        return self.skip and not self.is_checkpoint(net)

    def loaded(self, net: Any, strict: bool) -> None:
        if strict and self.is_checkpoint(net):
            self.strict_checkpoint_loads += 1


# -- library facts ---------------------------------------------------------------------------------------------
def pyiqa_cache_dir() -> str:
    """pyiqa's own download folder ($TORCH_HOME/hub/pyiqa, fixed when pyiqa is imported)."""
    from pyiqa.utils import download_util

    return download_util.DEFAULT_CACHE_DIR


def arch_class(network_type: str) -> type:
    """pyiqa's network class, importing its module first (pyiqa imports arch modules lazily)."""
    from pyiqa import archs
    from pyiqa.utils.registry import ARCH_REGISTRY

    if network_type not in ARCH_REGISTRY:
        _private(archs, "_lazy_import_arch")(network_type)
    return ARCH_REGISTRY.get(network_type)


def _private(module: Any, name: str) -> Any:
    """A private name of a library, with an error that says which version the pack was written against."""
    try:
        return getattr(module, name)
    except AttributeError:
        raise IQAAdapterError(
            f"{module.__name__} has no '{name}', which the IQA weight lookup uses; this pack is "
            f"written against {PINNED}. Install the pinned versions."
        ) from None


def _url_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def torchvision_arch_for_url(url: str) -> Callable[[], torch.nn.Module] | None:
    """The torchvision builder whose pretrained weights live at `url` (for backbone stand-ins)."""
    import torchvision.models as tvm

    for name in tvm.list_models():
        try:
            enum = tvm.get_model_weights(name)
        except Exception:  # noqa: BLE001 - some entries have no weights enum
            continue
        for w in enum:
            if w.url == url:
                return lambda n=name: tvm.get_model(n, weights=None)
    return None


def clip_stand_in(clip_model_module: Any, name: str) -> torch.nn.Module:
    """A freshly initialised CLIP of a known architecture (CLIP_ARCHS), in eval mode."""
    # eval(): CLIP's loaders return eval-mode models, and metrics that keep CLIP in a plain list
    # (CLIP-IQA, LAION-Aes) never switch it themselves; RN50's BatchNorm would use batch statistics.
    return clip_model_module.CLIP(*CLIP_ARCHS[name]).float().eval()


# -- one hook class per patched library ------------------------------------------------------------------------
Replacements = list[tuple[Callable, Callable]]  # (original function, its stand-in during the build)


class PyiqaHooks:
    """pyiqa's own files (metric checkpoints, NIQE/BRISQUE parameters, CLIP-IQA+ prompts, ...) and its
    load_pretrained_network, the one place its checkpoints are read into networks."""

    def __init__(self, source: WeightSource, backbones: Backbones):
        from pyiqa.archs import arch_util
        from pyiqa.utils import download_util

        self.source, self.backbones = source, backbones
        self.orig_file = download_util.load_file_from_url
        self.orig_load = arch_util.load_pretrained_network

    def load_file_from_url(
        self, url: str, model_dir: str | None = None, progress: bool = True, file_name: str | None = None
    ) -> str:
        name = file_name or _url_file_name(url)
        path = self.source.locate(name, url, [os.path.join(model_dir or pyiqa_cache_dir(), name)])
        if path is None:
            path = self.source.record(
                self.source.download(lambda: self.orig_file(url, model_dir, progress, file_name), name, url), url
            )
        return path

    def load_pretrained_network(
        self, net: torch.nn.Module, model_path: str, strict: bool = True, weight_keys: str | None = None
    ) -> None:
        if self.backbones.skips(net):
            log.debug("IQA metric %s: %s left at its initial weights", self.source.metric, type(net).__name__)
            return
        self.orig_load(net, model_path, strict, weight_keys)
        self.backbones.loaded(net, strict)

    def replacements(self) -> Replacements:
        return [(self.orig_file, self.load_file_from_url), (self.orig_load, self.load_pretrained_network)]


class TorchHubHooks:
    """torch.hub state dicts: torchvision backbones, ARNIQA's encoder, timm URL weights."""

    def __init__(self, source: WeightSource, backbones: Backbones):
        import torch.hub as hub

        self.source, self.backbones, self.hub = source, backbones, hub
        self.orig = hub.load_state_dict_from_url

    def load_state_dict_from_url(
        self,
        url: str,
        model_dir: str | None = None,
        map_location: Any = None,
        progress: bool = True,
        check_hash: bool = False,
        file_name: str | None = None,
        weights_only: bool = False,
    ) -> dict:
        name = file_name or _url_file_name(url)
        if self.backbones.skips():
            build = torchvision_arch_for_url(url)
            if build is not None:
                return build().state_dict()
        cache_dir = model_dir or os.path.join(self.hub.get_dir(), "checkpoints")
        path = self.source.locate(name, url, [os.path.join(cache_dir, name)])
        if path is None:
            return self.source.download(
                lambda: self.orig(url, model_dir, map_location, progress, check_hash, file_name, weights_only),
                name,
                url,
                record=os.path.join(cache_dir, name),
            )
        # Let torch.hub load it exactly as it would have, from the folder where it was found.
        return self.orig(
            url, os.path.dirname(path), map_location, progress, False, os.path.basename(path), weights_only
        )

    def replacements(self) -> Replacements:
        return [(self.orig, self.load_state_dict_from_url)]


class TimmHooks:
    """timm's pretrained loads and its downloads from the Hugging Face hub."""

    def __init__(self, source: WeightSource, backbones: Backbones):
        from timm.models import _builder, _hub

        self.source, self.backbones = source, backbones
        self.orig_hf = _private(_hub, "hf_hub_download")
        self.orig_pretrained = _private(_builder, "load_pretrained")

    def hf_hub_download(
        self, repo_id: str, filename: str, revision: str | None = None, cache_dir: Any = None, **kw: Any
    ) -> str:
        import huggingface_hub

        local_name = f"{repo_id.replace('/', '--')}--{filename}"
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision)
        path = self.source.locate(
            local_name, url, [cached if isinstance(cached, str) else ""], ["the Hugging Face cache"]
        )
        if path is None:
            path = self.source.record(
                self.source.download(
                    lambda: self.orig_hf(repo_id, filename=filename, revision=revision, cache_dir=cache_dir, **kw),
                    local_name,
                    url,
                ),
                url,
            )
        return path

    def load_pretrained(self, model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        if self.backbones.skips(model):
            return
        self.orig_pretrained(model, *args, **kwargs)

    def replacements(self) -> Replacements:
        return [(self.orig_hf, self.hf_hub_download), (self.orig_pretrained, self.load_pretrained)]


class ClipHooks:
    """One CLIP loader: pyiqa's copy of CLIP, or the openai-clip package (`clip.clip`)."""

    def __init__(
        self,
        source: WeightSource,
        backbones: Backbones,
        loader_module: Any,
        model_module: Any,
        returns_pair: bool,
        default_root: str,
    ):
        self.source, self.backbones = source, backbones
        self.loader_module, self.model_module = loader_module, model_module
        self.returns_pair, self.default_root = returns_pair, default_root
        self.orig = loader_module.load
        self.models: dict[str, str] = _private(loader_module, "_MODELS")  # architecture name -> URL

    @classmethod
    def present(cls, source: WeightSource, backbones: Backbones) -> list["ClipHooks"]:
        """Hooks for pyiqa's CLIP, and for openai-clip where some module has imported it."""
        import torch.hub as hub
        from pyiqa.archs import clip_model

        hooks = [cls(source, backbones, clip_model, clip_model, False, os.path.join(hub.get_dir(), "clip"))]
        openai_clip, openai_model = sys.modules.get("clip.clip"), sys.modules.get("clip.model")
        if openai_clip is not None and openai_model is not None:
            hooks.append(cls(source, backbones, openai_clip, openai_model, True, os.path.expanduser("~/.cache/clip")))
        return hooks

    def load(self, name: str, device: Any = "cpu", jit: bool = False, download_root: str | None = None) -> Any:
        if name in CLIP_ARCHS and self.backbones.skips():
            model = clip_stand_in(self.model_module, name).to(device)
            return (model, None) if self.returns_pair else model
        if name not in self.models:
            return self.orig(name, device, jit, download_root)
        url = self.models[name]
        fname = _url_file_name(url)
        default = os.path.join(download_root or self.default_root, fname)
        path = self.source.locate(fname, url, [default])
        if path is None:
            return self.source.download(lambda: self.orig(name, device, jit, download_root), fname, url, record=default)
        return self.orig(path, device, jit, download_root)

    def raw_download(self) -> Callable:
        return _private(self.loader_module, "_download")

    def replacements(self) -> Replacements:
        return [(self.orig, self.load)]


class DownloadRefusal:
    """Beneath every lookup: the raw downloaders raise, so an unknown fetch path cannot reach the network."""

    def __init__(self, source: WeightSource, clip_hooks: Sequence[ClipHooks] = ()):
        import huggingface_hub
        import torch.hub as hub

        self.source = source
        self.hf = huggingface_hub
        self.originals = [hub.download_url_to_file, *(h.raw_download() for h in clip_hooks)]
        self.orig_hf = huggingface_hub.hf_hub_download

    def refuse_url(self, url: str, *args: Any, **kwargs: Any) -> None:
        raise self.source.missing(_url_file_name(str(url)) or str(url), str(url), [])

    def refuse_hf(self, repo_id: str, filename: str = "", *args: Any, **kwargs: Any) -> None:
        filename = filename or kwargs.get("filename", "")
        raise self.source.missing(
            f"{repo_id.replace('/', '--')}--{filename}", self.hf.hf_hub_url(repo_id, filename), []
        )

    def replacements(self) -> Replacements:
        return [(o, self.refuse_url) for o in self.originals] + [(self.orig_hf, self.refuse_hf)]


def weights_only_load(load: Callable[..., Any]) -> Callable[..., Any]:
    """torch.load that always reads with weights_only=True.

    pyiqa 0.1.16 reads its checkpoints (arch_util.load_pretrained_network), BRISQUE's SVM and cached prompts
    with weights_only=False: a pickle in models/iqa would run code. Never during a build.
    """

    def guarded(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return load(*args, **kwargs)

    return guarded


class _Swaps:
    """Replace functions by identity in every module that bound them; undo in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def swap(self, replacements: Replacements) -> None:
        table = {id(orig): (orig, new) for orig, new in replacements}
        mods = [
            m
            for n, m in list(sys.modules.items())
            if m is not None and (n.split(".")[0] in _SWAP_ROOTS or n == "torch.hub")
        ]
        for mod in mods:
            namespace = getattr(mod, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attr, val in list(namespace.items()):
                hit = table.get(id(val))
                if hit is not None and hit[0] is val:
                    setattr(mod, attr, hit[1])
                    self._undo.append((mod, attr, val))

    def set(self, obj: Any, attr: str, value: Any) -> None:
        self._undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def restore(self) -> None:
        while self._undo:
            obj, attr, val = self._undo.pop()
            setattr(obj, attr, val)


def library_hooks(source: WeightSource, backbones: Backbones) -> list[Any]:
    """Every hook of one build: per library, then (downloads off) the refusal beneath them."""
    clip = ClipHooks.present(source, backbones)
    hooks: list[Any] = [
        PyiqaHooks(source, backbones),
        TorchHubHooks(source, backbones),
        TimmHooks(source, backbones),
        *clip,
    ]
    if not source.allow_download:
        hooks.append(DownloadRefusal(source, clip))
    return hooks


@contextmanager
def weight_gate(source: WeightSource, backbones: Backbones | None = None) -> Iterator[WeightSource]:
    """Build a pyiqa metric inside this to control every weight fetch (see the module docstring).

    Import the metric's network module first (arch_class), so that the names it bound are swapped too.
    """
    backbones = backbones if backbones is not None else Backbones()
    with _BUILD_LOCK:
        swaps = _Swaps()
        try:
            swaps.swap([pair for hook in library_hooks(source, backbones) for pair in hook.replacements()])
            swaps.set(torch, "load", weights_only_load(torch.load))
            yield source
        finally:
            swaps.restore()


def file_fingerprint(paths: Sequence[str]) -> tuple:
    """(path, size, mtime) of each file, so a cached model notices a replaced weight file."""
    out = []
    for p in paths:
        try:
            st = Path(p).stat()
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, -1, -1))
    return tuple(out)
