"""IQA models with random weights, for tests and benchmarks: each metric's real network, no file read.

The pack's runtime builds metrics only from weight files. This module builds the same networks through the
pack's own weight gate with two stricter policies: every pretrained load (the metric's checkpoint included)
leaves the network at its initial weights, and any file read refuses. The initial weights are a function
of the metric's name alone, and the models share the pack's cache, so every test and benchmark that asks
for a metric gets the same network whoever asked first.

Imported lazily (after the host has loaded the pack), by tests, the fixture nodes and bench/.
"""

from __future__ import annotations

import tempfile
import zlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from . import tiny_models


def _pack(submodule: str) -> Any:
    module = tiny_models.loaded_pack_module(submodule)
    if module is None:
        raise RuntimeError("The IQA-Adapter pack is not loaded in this host.")
    return module


errors, weights, iqa_models = _pack("adapter.errors"), _pack("guidance.weights"), _pack("guidance.iqa_models")

# Metrics whose build reads files that no random stand-in replaces (why, for the error message).
UNSUPPORTED = {
    "arniqa": "encoder and TorchScript regressor files",
    "arniqa-kadid": "TorchScript regressor file",
    "arniqa-flive": "TorchScript regressor file",
    "niqe": "natural scene statistics parameters",
    "brisque": "SVM parameters",
}
# Extra pyiqa options that keep a build from reading files (CLIP-IQA+'s learned prompts).
BUILD_OPTIONS: dict[str, dict[str, Any]] = {"clipiqa+": {"pretrained": False}}


class RandomWeightsUnsupported(errors.IQAAdapterError):
    """A metric's build reads a file that has no random stand-in."""


class NoFiles(weights.WeightSource):
    """A weight source that has no files: every lookup refuses."""

    def locate(self, file_name: str, url: str, cache_candidates: Any, also_looked: Any = ()) -> str | None:
        raise RandomWeightsUnsupported(
            f"IQA metric '{self.metric}' reads '{file_name}' while it is built and cannot be built with random weights."
        )


class AllInitial(weights.Backbones):
    """Every pretrained load, the metric's own checkpoint included, leaves the network as initialised."""

    def skips(self, net: Any = None) -> bool:
        return True


@contextmanager
def seeded(name: str) -> Iterator[None]:
    """Seed from the metric's name, leaving the caller's RNG state as it was: the cache hands one build to
    every caller, so a build from the global RNG state would make later results depend on which test or
    benchmark ran before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        yield


@contextmanager
def throwaway_caches() -> Iterator[None]:
    """LIQE caches text features computed from its (here random) CLIP in pyiqa's cache folder: point it at a
    temporary folder, so that a random build can never poison a real cache."""
    import sys

    liqe = sys.modules.get("pyiqa.archs.liqe_arch")
    if liqe is None:
        yield
        return
    real = liqe.DEFAULT_CACHE_DIR
    with tempfile.TemporaryDirectory(prefix="iqa-random-") as tmp:
        liqe.DEFAULT_CACHE_DIR = tmp
        try:
            yield
        finally:
            liqe.DEFAULT_CACHE_DIR = real


def build_random_iqa_model(name: str) -> Any:
    """An IQA_MODEL of `name` with random weights (uncached); the same weights on every build."""
    spec = iqa_models.get_spec(name)
    if spec.name in UNSUPPORTED:
        raise errors.IQAAdapterError(
            f"IQA metric '{spec.name}' cannot be built with random weights (it reads its {UNSUPPORTED[spec.name]})."
        )
    source = NoFiles(metric=spec.name)
    backbones = AllInitial()
    with torch.inference_mode(False):
        backbones.checkpoint_type = weights.arch_class(iqa_models.pyiqa_network_type(spec.name))  # imports liqe_arch
    with throwaway_caches(), seeded(spec.name):
        metric = iqa_models.create_metric(spec, source, backbones, **BUILD_OPTIONS.get(spec.name, {}))
    return iqa_models.wrap_metric(spec, metric, random_weights=True)


def load_random_iqa_model(name: str) -> Any:
    """build_random_iqa_model through the pack's shared model cache."""
    spec = iqa_models.get_spec(name)
    return iqa_models.cached_model(("random", spec.name), lambda: build_random_iqa_model(spec.name))
