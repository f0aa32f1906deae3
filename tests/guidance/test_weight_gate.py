"""The parts of the IQA weight gate one at a time: lookup, download, backbone skipping, each library's hook,
the torch.load guard, the swaps; and the test-only random-weight builds made with them."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from helpers import pack, random_iqa

weights = pack.guidance.weights
IQAAdapterError = pack.adapter.IQAAdapterError


class Checkpoint(torch.nn.Module):
    """Stands in for pyiqa's network class of a metric."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


# -- offline lookup ----------------------------------------------------------------------------------------------
def test_locate_prefers_the_iqa_folder_and_records_what_it_read(tmp_path):
    folder, cache = tmp_path / "iqa", tmp_path / "cache"
    (folder / "nested").mkdir(parents=True)
    cache.mkdir()
    (folder / "nested" / "w.pth").write_bytes(b"a")
    (cache / "w.pth").write_bytes(b"b")
    source = weights.WeightSource(search_dirs=(str(folder),), metric="m")
    assert source.locate("w.pth", "https://x/w.pth", [str(cache / "w.pth")]) == str(folder / "nested" / "w.pth")
    (folder / "nested" / "w.pth").unlink()
    assert source.locate("w.pth", "https://x/w.pth", [str(cache / "w.pth")]) == str(cache / "w.pth")
    assert source.used_files == [
        (str(folder / "nested" / "w.pth"), "https://x/w.pth"),
        (str(cache / "w.pth"), "https://x/w.pth"),
    ]


def test_locate_of_an_absent_file_refuses_unless_downloads_are_allowed(tmp_path):
    offline = weights.WeightSource(search_dirs=(str(tmp_path),), metric="m")
    with pytest.raises(weights.MissingWeightsError) as e:
        offline.locate("w.pth", "https://x/w.pth", [str(tmp_path / "c" / "w.pth")], ["the Hugging Face cache"])
    assert e.value.file_name == "w.pth" and e.value.url == "https://x/w.pth"
    assert f"Looked in: {tmp_path}, {tmp_path / 'c'}, the Hugging Face cache." in str(e.value)
    online = weights.WeightSource(search_dirs=(str(tmp_path),), allow_download=True, metric="m")
    assert online.locate("w.pth", "https://x/w.pth", []) is None and online.used_files == []


def test_a_failed_download_says_where_to_put_the_file_by_hand(tmp_path):
    source = weights.WeightSource(search_dirs=(str(tmp_path),), allow_download=True, metric="m")

    def fails():
        raise OSError("no route")

    with pytest.raises(IQAAdapterError, match=f"OSError: no route.*Download it by hand and put it in {tmp_path}"):
        source.download(fails, "w.pth", "https://x/w.pth")
    missing = source.missing("w.pth", "https://x/w.pth", [])

    def refuses():
        raise missing

    with pytest.raises(weights.MissingWeightsError) as e:
        source.download(refuses, "w.pth", "https://x/w.pth")
    assert e.value is missing, "the pack's own errors pass through unchanged"
    assert source.download(lambda: 7, "w.pth", "https://x/w.pth", record=str(tmp_path / "w.pth")) == 7
    assert source.used_files == [(str(tmp_path / "w.pth"), "https://x/w.pth")]


# -- backbone skipping --------------------------------------------------------------------------------------------
def test_backbones_skip_every_load_but_the_checkpoint_and_count_strict_ones():
    skipping = weights.Backbones(Checkpoint, skip=True)
    assert skipping.skips(torch.nn.Linear(2, 2)) and skipping.skips(None) and not skipping.skips(Checkpoint())
    assert not any(weights.Backbones(Checkpoint).skips(n) for n in (torch.nn.Linear(2, 2), None, Checkpoint()))
    skipping.loaded(Checkpoint(), strict=False)
    skipping.loaded(torch.nn.Linear(2, 2), strict=True)
    assert skipping.strict_checkpoint_loads == 0
    skipping.loaded(Checkpoint(), strict=True)
    assert skipping.strict_checkpoint_loads == 1


def test_pyiqa_hook_loads_only_the_checkpoint_when_backbones_are_skipped():
    backbones = weights.Backbones(Checkpoint, skip=True)
    hooks = weights.PyiqaHooks(weights.WeightSource(metric="m"), backbones)
    calls = []
    hooks.orig_load = lambda net, path, strict, keys: calls.append((type(net).__name__, path, strict))
    hooks.load_pretrained_network(torch.nn.Linear(2, 2), "backbone.pth")
    hooks.load_pretrained_network(Checkpoint(), "metric.pth", True, "params")
    assert calls == [("Checkpoint", "metric.pth", True)] and backbones.strict_checkpoint_loads == 1


def test_torch_hub_hook_stands_in_for_a_skipped_torchvision_backbone(tmp_path):
    import torchvision

    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    source = weights.WeightSource(search_dirs=(str(tmp_path),), metric="m")
    sd = weights.TorchHubHooks(source, weights.Backbones(skip=True)).load_state_dict_from_url(url)
    assert set(sd) == set(torchvision.models.resnet18().state_dict()) and source.used_files == []
    with pytest.raises(weights.MissingWeightsError, match="resnet18-f37072fd.pth"):
        weights.TorchHubHooks(source, weights.Backbones()).load_state_dict_from_url(
            url, model_dir=str(tmp_path / "hub")
        )


def test_clip_hook_names_the_file_or_builds_a_stand_in():
    from pyiqa.archs import clip_model as pyiqa_clip

    source = weights.WeightSource(metric="m")
    offline = weights.ClipHooks(source, weights.Backbones(), pyiqa_clip, pyiqa_clip, False, "/nonexistent/clip")
    with pytest.raises(weights.MissingWeightsError, match="'RN50.pt'.*openaipublic"):
        offline.load("RN50")
    skipping = weights.ClipHooks(
        source, weights.Backbones(skip=True), pyiqa_clip, pyiqa_clip, True, "/nonexistent/clip"
    )
    model, preprocess = skipping.load("RN50")
    assert isinstance(model, pyiqa_clip.CLIP) and not model.training and preprocess is None and source.used_files == []


def test_raw_downloads_are_refused_only_when_downloads_are_off():
    off = weights.library_hooks(weights.WeightSource(metric="m"), weights.Backbones())
    on = weights.library_hooks(weights.WeightSource(metric="m", allow_download=True), weights.Backbones())
    refusal = [h for h in off if isinstance(h, weights.DownloadRefusal)]
    assert len(refusal) == 1 and not any(isinstance(h, weights.DownloadRefusal) for h in on)
    assert torch.hub.download_url_to_file in [o for o, _ in refusal[0].replacements()]
    with pytest.raises(weights.MissingWeightsError, match="'x.bin'"):
        refusal[0].refuse_url("https://example.invalid/x.bin", "/tmp/x.bin")


# -- the torch.load guard and the swaps -----------------------------------------------------------------------------
def test_weights_only_load_overrides_what_the_caller_asked():
    seen = []
    guarded = weights.weights_only_load(lambda *a, **k: seen.append((a, k)) or "loaded")
    assert guarded("f.pth", map_location="cpu", weights_only=False) == "loaded"
    assert seen == [(("f.pth",), {"map_location": "cpu", "weights_only": True})]


def test_swaps_reach_every_alias_and_are_undone():
    def original():
        return "original"

    def stand_in():
        return "stand-in"

    alias = types.ModuleType("timm._iqa_alias_for_test")
    alias.f, alias.g = original, original
    outside = types.ModuleType("not_a_swap_root_for_test")
    outside.f = original
    sys.modules[alias.__name__], sys.modules[outside.__name__] = alias, outside
    try:
        swaps = weights._Swaps()
        swaps.swap([(original, stand_in)])
        assert alias.f is stand_in and alias.g is stand_in and outside.f is original
        swaps.restore()
        assert alias.f is original and alias.g is original
    finally:
        del sys.modules[alias.__name__], sys.modules[outside.__name__]


def test_a_missing_private_name_says_which_versions_the_pack_needs():
    with pytest.raises(IQAAdapterError, match=r"no '_gone'.*pyiqa 0\.1\.16"):
        weights._private(types.ModuleType("somelib"), "_gone")


# -- random weights (test-only builds) --------------------------------------------------------------------------------
def test_random_builds_read_no_file_repeat_and_leave_the_rng_alone():
    state = torch.random.get_rng_state()
    a, b = random_iqa.build_random_iqa_model("cnniqa"), random_iqa.build_random_iqa_model("cnniqa")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.files == () and a.random_weights and a.metric is not b.metric
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert random_iqa.load_random_iqa_model("cnniqa") is random_iqa.load_random_iqa_model("cnniqa")


def test_random_builds_refuse_metrics_and_files_they_cannot_stand_in_for():
    with pytest.raises(IQAAdapterError, match="'niqe' cannot be built with random weights"):
        random_iqa.build_random_iqa_model("niqe")
    with pytest.raises(random_iqa.RandomWeightsUnsupported, match="reads 'w.pth'"):
        random_iqa.NoFiles(metric="m").locate("w.pth", "https://x/w.pth", [])
    assert random_iqa.AllInitial(Checkpoint, skip=False).skips(Checkpoint())
