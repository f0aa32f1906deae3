"""A `--plugin` for `python -m training embed` in tests: TOPIQ-NR's real network with random weights.

The tests run offline with no weight files; this registers a builder that reads none (the same weight
gate policies as tests/fixture_nodes/random_iqa.py, reached outside the host), seeded from the metric's name
so that every process and every rerun embeds with the same network.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import torch

from training.common.core import guidance
from training.iqa_adapter.embed import register_embedding_model

METRIC = "topiq_nr"


def build(_iqa_dirs: Sequence[Any], device: Any) -> Any:
    weights, iqa = guidance("weights"), guidance("iqa_models")

    class NoFiles(weights.WeightSource):
        def locate(self, file_name: str, url: str, cache_candidates: Any, also_looked: Any = ()) -> str | None:
            raise RuntimeError(f"the random {METRIC} read {file_name}")

    class AllInitial(weights.Backbones):
        def skips(self, net: Any = None) -> bool:
            return True

    spec = iqa.get_spec(METRIC)
    backbones = AllInitial()
    with torch.inference_mode(False):
        backbones.checkpoint_type = weights.arch_class(iqa.pyiqa_network_type(METRIC))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(METRIC.encode()))
        metric = iqa.create_metric(spec, NoFiles(metric=METRIC), backbones)
    return iqa.wrap_metric(spec, metric, random_weights=True, home=device)


register_embedding_model(METRIC, build)
