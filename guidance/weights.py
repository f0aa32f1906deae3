"""Where IQA weights come from: the `iqa` model folder, then pyiqa's cache, and the network only on request.

pyiqa, timm, torchvision and CLIP each fetch weights by URL when a metric is built, from whichever module
bound the fetch function. A `WeightGate` swaps those functions, for the duration of one build, for ones
that look the file up locally and refuse to download unless the user allowed it. The swap is done on
every module that bound the function (found by identity), so it also covers `from x import f` aliases.
Beneath that, the raw downloaders are swapped for ones that raise, so a fetch path that this module does
not know about still cannot reach the network unannounced.

Two more policies ride on the same hooks:
- random weights (tests, benchmarks): every load yields a freshly initialised network of the right shape;
- backbone skipping: for metrics whose own checkpoint is loaded strictly into the whole network, the
  backbone's ImageNet/CLIP weights would be overwritten anyway, so they are not needed at all. The gate
  checks afterwards that the strict load did happen.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
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

# CLIP architectures pyiqa's metrics use (OpenAI CLIP model card facts), to build them with random weights
# without reading their checkpoint: embed_dim, image_resolution, vision_layers, vision_width,
# vision_patch_size, context_length, vocab_size, transformer_width, transformer_heads, transformer_layers.
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


class RandomWeightsUnsupported(IQAAdapterError):
    pass


@dataclass
class WeightSource:
    """Where one build may take weights from."""

    search_dirs: tuple[str, ...] = ()  # the `iqa` model folder(s), searched first (recursively, by file name)
    allow_download: bool = False
    random: bool = False  # architecture only: no file is read, everything freshly initialised
    metric: str = ""  # for messages
    network_type: str = ""  # pyiqa's network class name of the metric (its strict loads count as the checkpoint)
    arch_type: type | None = None  # that class, filled in by the gate
    skip_backbone: bool = False  # the metric's checkpoint covers the backbone: don't read backbone weights
    used_files: list[tuple[str, str]] = field(default_factory=list)  # (path, url) read by the build
    strict_checkpoint_loads: int = 0

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


def pyiqa_cache_dir() -> str:
    """pyiqa's own download folder ($TORCH_HOME/hub/pyiqa, fixed when pyiqa is imported)."""
    from pyiqa.utils import download_util

    return download_util.DEFAULT_CACHE_DIR


def arch_class(network_type: str) -> type:
    """pyiqa's network class, importing its module first (pyiqa imports arch modules lazily)."""
    from pyiqa import archs
    from pyiqa.utils.registry import ARCH_REGISTRY

    if network_type not in ARCH_REGISTRY:
        archs._lazy_import_arch(network_type)  # pyiqa 0.1.16; pinned in requirements/iqa.txt
    return ARCH_REGISTRY.get(network_type)


def _url_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


class _Swaps:
    """Replace functions by identity in every module that bound them; undo in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def swap(self, table: dict[int, tuple[Any, Any]]) -> None:
        mods = [m for n, m in list(sys.modules.items()) if m is not None and (n.split(".")[0] in _SWAP_ROOTS or n == "torch.hub")]
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


def _torchvision_arch_for_url(url: str) -> Callable[[], torch.nn.Module] | None:
    """The torchvision builder whose pretrained weights live at `url` (for random stand-ins)."""
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


def _random_clip(clip_module: Any, name: str) -> torch.nn.Module:
    if name not in CLIP_ARCHS:
        raise RandomWeightsUnsupported(f"No CLIP architecture table entry for '{name}'; cannot build it with random weights.")
    # eval(): CLIP's loaders return eval-mode models, and metrics that keep CLIP in a plain list
    # (CLIP-IQA, LAION-Aes) never switch it themselves; RN50's BatchNorm would use batch statistics.
    return clip_module.CLIP(*CLIP_ARCHS[name]).float().eval()


@contextmanager
def weight_gate(source: WeightSource) -> Iterator[WeightSource]:
    """Build a pyiqa metric inside this to control every weight fetch (see the module docstring)."""
    import huggingface_hub
    import torch.hub as hub
    from pyiqa.archs import arch_util, clip_model as pyiqa_clip
    from pyiqa.utils import download_util
    from timm.models import _builder as timm_builder, _hub as timm_hub

    if source.network_type:
        # Import the metric's module before swapping, so that the names it bound are swapped too.
        source.arch_type = arch_class(source.network_type)
    openai_clip = sys.modules.get("clip.clip")
    openai_clip_model = sys.modules.get("clip.model")
    orig = {
        "load_file_from_url": download_util.load_file_from_url,
        "load_pretrained_network": arch_util.load_pretrained_network,
        "load_state_dict_from_url": hub.load_state_dict_from_url,
        "timm_hf_download": timm_hub.hf_hub_download,
        "timm_load_pretrained": timm_builder.load_pretrained,
        "pyiqa_clip_load": pyiqa_clip.load,
    }

    def backbone_random() -> bool:
        return source.random or source.skip_backbone

    # -- pyiqa's own files (metric checkpoints, NIQE/BRISQUE parameters, CLIP-IQA+ prompts, ...) ---------
    def load_file_from_url(url: str, model_dir: str | None = None, progress: bool = True, file_name: str | None = None) -> str:
        name = file_name or _url_file_name(url)
        if source.random:
            raise RandomWeightsUnsupported(
                f"IQA metric '{source.metric}' reads '{name}' while it is built and cannot be built with random weights."
            )
        cache = os.path.join(model_dir or pyiqa_cache_dir(), name)
        path, looked = source.find(name, [cache])
        if path is None:
            if not source.allow_download:
                raise source.missing(name, url, looked)
            log.warning("Downloading %s for IQA metric %s (allow_download is on)", url, source.metric)
            path = _download(lambda: orig["load_file_from_url"](url, model_dir, progress, file_name), name, url, source)
        return source.record(path, url)

    def load_pretrained_network(net: torch.nn.Module, model_path: str, strict: bool = True, weight_keys: str | None = None) -> None:
        is_checkpoint = source.arch_type is not None and isinstance(net, source.arch_type)
        if source.random or (source.skip_backbone and not is_checkpoint):
            log.debug("IQA metric %s: %s left at its initial weights (%s)", source.metric, type(net).__name__,
                      "random build" if source.random else "covered by the metric's checkpoint")
            return
        orig["load_pretrained_network"](net, model_path, strict, weight_keys)
        if is_checkpoint and strict:
            source.strict_checkpoint_loads += 1

    # -- torch.hub state dicts (torchvision backbones, ARNIQA's encoder, timm URL weights) -----------------
    def load_state_dict_from_url(url: str, model_dir: str | None = None, map_location: Any = None, progress: bool = True,
                                 check_hash: bool = False, file_name: str | None = None, weights_only: bool = False) -> dict:
        name = file_name or _url_file_name(url)
        if backbone_random():
            build = _torchvision_arch_for_url(url)
            if build is not None:
                return build().state_dict()
            if source.random:
                raise RandomWeightsUnsupported(
                    f"IQA metric '{source.metric}' reads '{name}' while it is built and cannot be built with random weights."
                )
        cache_dir = model_dir or os.path.join(hub.get_dir(), "checkpoints")
        path, looked = source.find(name, [os.path.join(cache_dir, name)])
        if path is None:
            if not source.allow_download:
                raise source.missing(name, url, looked)
            log.warning("Downloading %s for IQA metric %s (allow_download is on)", url, source.metric)
            return _download(lambda: orig["load_state_dict_from_url"](url, model_dir, map_location, progress, check_hash, file_name, weights_only),
                             name, url, source, record=os.path.join(cache_dir, name))
        source.record(path, url)
        # Let torch.hub load it exactly as it would have, from the folder where it was found.
        return orig["load_state_dict_from_url"](url, os.path.dirname(path), map_location, progress, False, os.path.basename(path), weights_only)

    # -- timm weights on the Hugging Face hub ----------------------------------------------------------------
    def timm_hf_download(repo_id: str, filename: str, revision: str | None = None, cache_dir: Any = None, **kw: Any) -> str:
        local_name = f"{repo_id.replace('/', '--')}--{filename}"
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        path, looked = source.find(local_name, [cached if isinstance(cached, str) else ""])
        looked.append("the Hugging Face cache")
        url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision)
        if path is None:
            if not source.allow_download:
                raise source.missing(local_name, url, looked)
            log.warning("Downloading %s for IQA metric %s (allow_download is on)", url, source.metric)
            path = _download(lambda: orig["timm_hf_download"](repo_id, filename=filename, revision=revision, cache_dir=cache_dir, **kw),
                             local_name, url, source)
        return source.record(path, url)

    def timm_load_pretrained(model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        if backbone_random():
            return
        orig["timm_load_pretrained"](model, *args, **kwargs)

    # -- CLIP (pyiqa's copy and the openai-clip package) -----------------------------------------------------
    def clip_loader(original: Callable, clip_mod: Any, model_mod: Any, returns_pair: bool, default_root: str) -> Callable:
        def load(name: str, device: Any = "cpu", jit: bool = False, download_root: str | None = None):
            if name in CLIP_ARCHS and backbone_random():
                model = _random_clip(model_mod, name).to(device)
                return (model, None) if returns_pair else model
            if name not in clip_mod._MODELS:
                return original(name, device, jit, download_root)
            url = clip_mod._MODELS[name]
            fname = _url_file_name(url)
            path, looked = source.find(fname, [os.path.join(download_root or default_root, fname)])
            if path is None:
                if source.random:
                    raise RandomWeightsUnsupported(f"No random stand-in for CLIP '{name}'.")
                if not source.allow_download:
                    raise source.missing(fname, url, looked)
                log.warning("Downloading %s for IQA metric %s (allow_download is on)", url, source.metric)
                return _download(lambda: original(name, device, jit, download_root), fname, url, source,
                                 record=os.path.join(download_root or default_root, fname))
            source.record(path, url)
            return original(path, device, jit, download_root)
        return load

    # -- beneath everything: raw downloads refuse unless allowed -------------------------------------------
    def refuse_url(url: str, *args: Any, **kwargs: Any):
        raise source.missing(_url_file_name(str(url)) or str(url), str(url), [])

    def refuse_hf(repo_id: str, filename: str = "", *args: Any, **kwargs: Any):
        filename = filename or kwargs.get("filename", "")
        raise source.missing(f"{repo_id.replace('/', '--')}--{filename}", huggingface_hub.hf_hub_url(repo_id, filename), [])

    swaps = _Swaps()
    table: dict[int, tuple[Any, Any]] = {}

    def add(original: Any, replacement: Any) -> None:
        table[id(original)] = (original, replacement)

    add(orig["load_file_from_url"], load_file_from_url)
    add(orig["load_pretrained_network"], load_pretrained_network)
    add(orig["load_state_dict_from_url"], load_state_dict_from_url)
    add(orig["timm_hf_download"], timm_hf_download)
    add(orig["timm_load_pretrained"], timm_load_pretrained)
    add(orig["pyiqa_clip_load"], clip_loader(orig["pyiqa_clip_load"], pyiqa_clip, pyiqa_clip, False, os.path.join(hub.get_dir(), "clip")))
    if openai_clip is not None and openai_clip_model is not None:
        add(openai_clip.load, clip_loader(openai_clip.load, openai_clip, openai_clip_model, True, os.path.expanduser("~/.cache/clip")))
    if not source.allow_download:
        add(hub.download_url_to_file, refuse_url)
        add(huggingface_hub.hf_hub_download, refuse_hf)
        add(pyiqa_clip._download, refuse_url)
        if openai_clip is not None:
            add(openai_clip._download, refuse_url)

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        # pyiqa 0.1.16 reads its checkpoints (arch_util.load_pretrained_network), BRISQUE's SVM and cached
        # prompts with weights_only=False: a pickle in models/iqa would run code. Never during a build.
        kwargs["weights_only"] = True
        return real_torch_load(*args, **kwargs)

    with _BUILD_LOCK:
        tmp = None
        real_torch_load = torch.load
        try:
            swaps.swap(table)
            swaps.set(torch, "load", weights_only_load)
            if source.random:
                # LIQE caches text features computed from its (here random) CLIP in pyiqa's cache dir:
                # point it at a throwaway folder so a random build can never poison a real cache.
                tmp = tempfile.TemporaryDirectory(prefix="iqa-random-")
                liqe = sys.modules.get("pyiqa.archs.liqe_arch")
                if liqe is not None:
                    swaps.set(liqe, "DEFAULT_CACHE_DIR", tmp.name)
            yield source
        finally:
            swaps.restore()
            if tmp is not None:
                tmp.cleanup()


def _download(fetch: Callable[[], Any], name: str, url: str, source: WeightSource, record: str | None = None) -> Any:
    """Run an allowed download; a failure becomes an error that says where to put the file by hand."""
    try:
        result = fetch()
    except IQAAdapterError:
        raise
    except Exception as e:  # noqa: BLE001 - any network or disk failure
        where = source.search_dirs[0] if source.search_dirs else "models/iqa"
        raise IQAAdapterError(
            f"Downloading '{name}' for IQA metric '{source.metric}' from {url} failed ({type(e).__name__}: {e}). "
            f"Download it by hand and put it in {where}."
        ) from e
    if record:
        source.record(record, url)
    return result


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
