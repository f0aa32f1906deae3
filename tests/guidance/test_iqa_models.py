"""IQA models through pyiqa on the real host, offline: Load IQA Model, IQA Score, weights, gradients, taps.

Real scores: NIQE (with parameters converted from a PyPI package by scripts/prepare_test_data.sh), PIQE and
entropy (no files) reproduce pyiqa's own reference values on the calibration images inside the pyiqa wheel.
Neural metrics are built with random weights. Every test runs with DNS and outbound connections refused
and recorded, and checks that nothing was attempted unless it switched downloads on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from helpers import NIQE_FILE, NIQE_MAT, random_iqa
from PIL import Image

pack = conftest.pack
iqa = pack.guidance.iqa_models
specs = pack.guidance.metric_specs
weights = pack.guidance.weights
host = pack.nodes.host
LoadIQAModel = pack.nodes.load_iqa_model.LoadIQAModel
IQAScore = pack.nodes.iqa_score.IQAScore
IQAAdapterError = pack.adapter.IQAAdapterError

CALIBRATION = Path(next(p for p in sys.path if (Path(p) / "ResultsCalibra").is_dir())) / "ResultsCalibra" / "dist_dir"
IMAGES = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")
# pyiqa's own results on these images: ResultsCalibra/calibration_summary.csv, rows "<metric>(ours)".
REFERENCE = {
    "niqe": (15.6538, 3.6549, 3.2342, 3.1921, 9.0722),
    "piqe": (100.0, 21.6242, 35.8646, 41.147, 76.9485),
    "entropy": (6.9511, 6.9661, 7.5309, 7.5565, 5.7629),
}
# How far each image's NIQE may sit from the reference on any CPU. NIQE rounds 255 * Y to integer grey levels,
# Y = 0.299 R + 0.587 G + 0.114 B in float32, and where 299 R + 587 G + 114 B ends in 500 the exact value is a
# .5 tie: which way it rounds depends on the kernel's summation order and FMA use. I03 has 162 such pixels,
# I06 9, I08 4, I04 and I19 none (all later steps are float64). Measured on I03, with Y evaluated in all 12
# float32 orders (with and without FMA): 15.6502-15.6562 (15.6532, 15.6538 and 15.6558 seen on real CPUs);
# all ties up/down: 15.6701/15.6744, exact Y 15.6701. 0.025 covers all of that; it is 0.16 % of the value
# and 7x tighter than pyiqa's own calibration check (atol = rtol = 1e-2). I06: its 9 ties, summing the effect of
# each flip, stay within 2.6e-3. The rest differ from pyiqa's figures by <= 5.4e-4 on every CPU (the parameter file
# and the reference's 4 decimals), so 2e-3 stays.
NIQE_TOL = (0.025, 2e-3, 3e-3, 2e-3, 2e-3)
TABLE = json.loads((conftest.REPO / "weights" / "cc3m_norm_stats.json").read_text())["metrics"]
LOCAL = ("127.0.0.1", "::1", "localhost", "", None)


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch):
    """Refuse and record every DNS lookup and outbound connection (loopback excepted)."""
    attempts: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        host_ = address[0] if isinstance(address, tuple) else None
        if self.family != socket.AF_UNIX and host_ not in LOCAL and not str(host_).startswith("127."):
            attempts.append(("connect", address))
            raise ConnectionRefusedError(f"offline test: connect to {address!r} refused")
        return real_connect(self, address)

    def getaddrinfo(host_, *args, **kwargs):
        h = host_.decode() if isinstance(host_, bytes) else host_
        if h not in LOCAL and not str(h).startswith("127."):
            attempts.append(("dns", h))
            raise socket.gaierror(f"offline test: lookup of {h!r} refused")
        return real_getaddrinfo(host_, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts


@pytest.fixture(scope="module")
def iqa_dir() -> Path:
    """The registered `iqa` model folder of the test host, emptied around each module."""
    d = Path(host.model_folder_dirs(host.IQA_FOLDER)[0])
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)
    iqa.clear_cache()


@pytest.fixture(scope="module")
def niqe_params() -> Path:
    if not NIQE_MAT.is_file():
        pytest.fail(f"NIQE parameters missing at {NIQE_MAT}: run scripts/prepare_test_data.sh (scripts/test.sh does).")
    return NIQE_MAT


def assert_niqe_matches_reference(scores, first: int = len(IMAGES)) -> None:
    """The NIQE scores of the first `first` calibration images, each within its NIQE_TOL of pyiqa's figure."""
    want, tol = REFERENCE["niqe"][:first], NIQE_TOL[:first]
    assert len(scores) == first and all(abs(s - w) <= t for s, w, t in zip(scores, want, tol)), (
        list(scores),
        want,
        tol,
    )


def calibration_batch() -> torch.Tensor:
    """The five calibration images as a host IMAGE [5, 384, 512, 3]."""
    arrays = [np.asarray(Image.open(CALIBRATION / n).convert("RGB"), dtype=np.float32) / 255.0 for n in IMAGES]
    return torch.from_numpy(np.stack(arrays))


def load(metric: str, allow_download: bool = False, device: str = "auto"):
    """Load IQA Model as the host runs it: inside torch.inference_mode."""
    with torch.inference_mode():
        return LoadIQAModel().load(metric, allow_download, device)[0]


def score_node(image: torch.Tensor, model, batch_size: int = 1) -> dict:
    with torch.inference_mode():
        return IQAScore().score(image, model, batch_size)


def guided_scores(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw scores, objective) with gradients to x, through the path IQA Gradient Guidance runs: its score
    term (a differentiable copy of the network) and its objective (maximize: higher is better)."""
    term = pack.nodes.gradient_guidance.score_term(model, 1.0, "maximize")
    raw = term.build(x.device)(x)
    return raw, pack.guidance.gradient_guidance.objective([raw], [term], "maximize", 0.0)


def random_model(name: str):
    return random_iqa.load_random_iqa_model(name)


# -- the registry ------------------------------------------------------------------------------------------
def test_registry_covers_the_norm_table_and_reads_pyiqa_facts():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert set(TABLE) <= set(specs.METRICS), "every metric of the CC3M table is supported"
    for name, spec in specs.METRICS.items():
        assert DEFAULT_CONFIGS[name]["metric_mode"] == "NR", name
        lo, hi = spec.score_range
        assert isinstance(spec.lower_better, bool) and lo < hi and spec.min_side >= 1, name
    assert not specs.METRICS["piqe"].differentiable and not specs.METRICS["entropy"].differentiable
    # A few facts as pyiqa 0.1.16 states them: lower-better NIQE/BRISQUE/PIQE, '~' bounds taken as given.
    assert [specs.get_spec(n).lower_better for n in ("niqe", "brisque", "piqe", "topiq_nr", "laion_aes")] == [
        True
    ] * 3 + [False] * 2
    assert specs.get_spec("niqe").score_range == (0.0, 100.0) and specs.get_spec("liqe").score_range == (1.0, 5.0)


@pytest.mark.parametrize(
    "text, want",
    [("~0, ~1", (0.0, 1.0)), ("1, 5", (1.0, 5.0)), (" ~0 , ~150 ", (0.0, 150.0)), ("0", None), ("1, 1", None)],
)
def test_pyiqa_score_ranges_are_parsed(text, want):
    if want is None:
        with pytest.raises(ValueError, match="score range"):
            specs.parse_score_range(text)
    else:
        assert specs.parse_score_range(text) == want


@pytest.mark.parametrize(
    "name, hint",
    [
        ("topiqnr", "Did you mean 'topiq_nr'"),
        ("LAION_AES", None),
        ("qalign", "7B"),
        ("no_such_metric", "Supported: topiq_nr"),
    ],
)
def test_unknown_metric_names(name, hint):
    if hint is None:  # case-insensitive match
        assert specs.get_spec(name).name == "laion_aes"
        return
    with pytest.raises(IQAAdapterError, match=hint):
        load(name)


def test_nodes_document_every_input():
    for cls in (LoadIQAModel, IQAScore):
        assert cls.CATEGORY == "IQA-Adapter" and len(cls.DESCRIPTION) > 40
        for group in cls.INPUT_TYPES().values():
            for spec in group.values():
                assert spec[1].get("tooltip"), cls.__name__
    assert pack.NODE_CLASS_MAPPINGS["IQALoadModel"] is LoadIQAModel
    assert pack.NODE_CLASS_MAPPINGS["IQAScore"] is IQAScore
    assert host.IQA_FOLDER in host.folder_paths().folder_names_and_paths


# -- real scores -------------------------------------------------------------------------------------------
def test_niqe_through_the_nodes_reproduces_pyiqa_reference(iqa_dir, niqe_params, network_attempts):
    shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
    model = load("niqe")
    assert [p for p, _ in model.files] == [str(iqa_dir / NIQE_FILE)]
    out = score_node(calibration_batch(), model, batch_size=2)
    scores, pct, z, table, plot = out["result"][:5]
    assert_niqe_matches_reference(scores)
    assert all(math.isnan(v) for v in pct + z), "niqe has no CC3M statistics"
    # the table shows the score the node returned (its digits depend on the CPU, see NIQE_TOL)
    assert out["ui"]["text"] == [table] and "niqe (lower is better)" in table and f"\t{scores[0]:.6g}\t" in table
    assert plot.shape == (1, 320, 512, 3) and 0.0 <= plot.min() and plot.max() <= 1.0 and plot.std() > 0.05
    assert network_attempts == []


@pytest.mark.parametrize("name", ["piqe", "entropy"])
def test_file_free_metrics_reproduce_pyiqa_reference(name, network_attempts):
    scores = score_node(calibration_batch(), load(name))["result"][0]
    # Both round Y too (see NIQE_TOL), but every float32 order of Y moves them by < 3e-5 (measured).
    assert scores == pytest.approx(REFERENCE[name], abs=2e-3)
    assert network_attempts == []


def test_niqe_gradients_and_objective_sign(iqa_dir, niqe_params):
    shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
    model = load("niqe")
    with torch.inference_mode():  # as inside a sampler hook
        image = calibration_batch()[:2].movedim(-1, 1)
        with torch.inference_mode(False):
            x = image.clone().requires_grad_(True)
            raw, q = guided_scores(model, x)
            q.sum().backward()
    assert_niqe_matches_reference(raw.detach().tolist(), first=2)
    assert torch.equal(q.detach(), -raw.detach()), "lower is better for NIQE, and it has no CC3M statistics"
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- weights: where they come from, and that nothing downloads -------------------------------------------
def test_iqa_folder_comes_before_pyiqa_cache(iqa_dir, niqe_params, network_attempts):
    cache = Path(weights.pyiqa_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    try:
        (cache / NIQE_FILE).write_bytes(b"not a mat file")  # a broken cache copy must not be read
        shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
        model = iqa.build_iqa_model("niqe", search_dirs=[str(iqa_dir)])
        assert model.files[0][0] == str(iqa_dir / NIQE_FILE)
        (iqa_dir / NIQE_FILE).unlink()
        with pytest.raises(IQAAdapterError, match="corrupt") as e:  # then the cache copy is the one read
            iqa.build_iqa_model("niqe", search_dirs=[str(iqa_dir)])
        assert str(cache / NIQE_FILE) in str(e.value)
        shutil.copy(niqe_params, cache / NIQE_FILE)
        model = iqa.build_iqa_model("niqe", search_dirs=[str(iqa_dir)])
        assert model.files[0][0] == str(cache / NIQE_FILE)
    finally:
        (cache / NIQE_FILE).unlink(missing_ok=True)
    assert network_attempts == []


def test_corrupt_weight_file_names_the_file(iqa_dir, network_attempts):
    bad = iqa_dir / NIQE_FILE
    bad.write_bytes(b"\x00" * 64)
    try:
        with pytest.raises(IQAAdapterError) as e:
            load("niqe")
        msg = str(e.value)
        assert (
            str(bad) in msg and "corrupt" in msg and "IQA-PyTorch-Weights/resolve/main/niqe_modelparameters.mat" in msg
        )
    finally:
        bad.unlink()
    assert network_attempts == []


@pytest.mark.parametrize(
    "metric, file_name, url_part",
    [
        ("topiq_nr", "cfanet_nr_koniq_res50-9a73138b.pth", "huggingface.co/chaofengc/IQA-PyTorch-Weights"),
        ("musiq", "musiq_koniq_ckpt-e95806b9.pth", "huggingface.co/chaofengc/IQA-PyTorch-Weights"),
        ("laion_aes", "ViT-L-14.pt", "openaipublic"),
        ("arniqa", "resnet50-0676ba61.pth", "download.pytorch.org"),
        ("liqe", "liqe_koniq.pt", "huggingface.co/chaofengc/IQA-PyTorch-Weights"),
    ],
)
def test_missing_weights_name_file_folder_and_url_without_network(
    metric, file_name, url_part, iqa_dir, network_attempts
):
    with pytest.raises(weights.MissingWeightsError) as e:
        load(metric)
    msg = str(e.value)
    assert f"'{file_name}'" in msg and str(iqa_dir) in msg and url_part in msg and "allow_download" in msg
    assert e.value.file_name == file_name
    assert network_attempts == [], "nothing may reach the network while allow_download is off"


def test_neural_checkpoint_from_the_iqa_folder_needs_no_backbone_file(iqa_dir, network_attempts):
    """A TOPIQ checkpoint (here: random weights saved in pyiqa's format) is all a real build needs: its strict
    load covers the ResNet-50 backbone, so timm's ImageNet weights are never asked for."""
    donor = random_model("topiq_nr")
    ckpt = iqa_dir / "cfanet_nr_koniq_res50-9a73138b.pth"
    torch.save({"params": donor.net.state_dict()}, ckpt)
    try:
        model = iqa.build_iqa_model("topiq_nr", search_dirs=[str(iqa_dir)])
        assert [p for p, _ in model.files] == [str(ckpt)] and not model.random_weights
        x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(model.score(x), donor.score(x), atol=1e-6)
    finally:
        ckpt.unlink()
    assert network_attempts == []


def test_arniqa_files_from_the_iqa_folder_torch_hub_and_torchscript(iqa_dir, network_attempts):
    """ARNIQA reads three files through three loaders (torchvision's hub weights, torch.hub's ARNIQA encoder,
    pyiqa's TorchScript regressor): stand-ins in models/iqa are found, and its gradients flow."""
    import torchvision

    resnet = torchvision.models.resnet50(weights=None)
    encoder = torch.nn.Sequential(*list(resnet.children())[:-1])
    files = {
        "resnet50-0676ba61.pth": lambda p: torch.save(resnet.state_dict(), p),
        "ARNIQA.pth": lambda p: torch.save({f"model.{k}": v for k, v in encoder.state_dict().items()}, p),
        "regressor_koniq10k.pth": lambda p: torch.jit.save(torch.jit.script(torch.nn.Linear(4096, 1)), str(p)),
    }
    for name, write in files.items():
        write(iqa_dir / name)
    try:
        model = iqa.build_iqa_model("arniqa", search_dirs=[str(iqa_dir)])
        assert sorted(Path(p).name for p, _ in model.files) == sorted(files)
        x = torch.rand(1, 3, 64, 64, requires_grad=True)
        guided_scores(model, x)[1].sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    finally:
        for name in files:
            (iqa_dir / name).unlink()
    assert network_attempts == []


def test_raw_downloaders_refuse_inside_the_gate(tmp_path, network_attempts):
    """Beneath the lookups, any fetch path the gate does not know still cannot download."""
    import timm.models._hub as timm_hub

    url = "https://example.invalid/some/weights-123.pth"
    with weights.weight_gate(weights.WeightSource(search_dirs=(str(tmp_path),), metric="test")):
        with pytest.raises(weights.MissingWeightsError, match="weights-123.pth"):
            torch.hub.download_url_to_file(url, str(tmp_path / "x"))
        with pytest.raises(weights.MissingWeightsError, match=str(tmp_path)):
            torch.hub.load_state_dict_from_url(url)
        with pytest.raises(weights.MissingWeightsError, match="timm--resnet18.a1_in1k--model.safetensors"):
            timm_hub.hf_hub_download("timm/resnet18.a1_in1k", filename="model.safetensors")
    assert torch.hub.download_url_to_file.__module__ == "torch.hub", "swaps are undone"
    assert network_attempts == []


def test_allow_download_is_the_only_way_to_the_network(iqa_dir, network_attempts):
    with pytest.raises(IQAAdapterError, match="Download it by hand and put it in"):
        load("topiq_nr", allow_download=True)
    assert network_attempts, "with allow_download on, the fetch is attempted (and refused by this offline test)"


# -- neural metrics with random weights ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["topiq_nr", "musiq", "clipiqa+", "liqe", "laion_aes"])
def test_neural_metrics_score_a_batch_with_finite_input_gradients(name, network_attempts):
    model = random_model(name)
    assert not any(p.is_inference() for p in model.net.parameters())
    image = torch.rand(2, 224, 224, 3, generator=torch.Generator().manual_seed(0))
    scores = score_node(image, model)["result"][0]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    with torch.inference_mode():
        with torch.inference_mode(False):
            x = image.movedim(-1, 1).clone().requires_grad_(True)
            raw, q = guided_scores(model, x)
            q.sum().backward()
    assert raw.shape == (2,) and raw.detach().tolist() == pytest.approx(scores, rel=1e-4, abs=1e-5)
    assert torch.isfinite(x.grad).all() and (x.grad.flatten(1).abs().sum(1) > 0).all()
    assert network_attempts == []


def test_random_builds_leave_real_caches_alone():
    before = sorted(Path(weights.pyiqa_cache_dir()).glob("liqe_text_feat*"))
    random_iqa.build_random_iqa_model("liqe")  # uncached: a fresh build computes LIQE's text features
    assert sorted(Path(weights.pyiqa_cache_dir()).glob("liqe_text_feat*")) == before


def test_topiq_taps_backbone_activations():
    model = random_model("topiq_nr")
    x = torch.rand(1, 3, 224, 224)
    acts = model.activations(x)
    assert {k: (v.shape[1], 224 // v.shape[-1]) for k, v in acts.items()} == {
        "semantic_model.act1": (64, 2),
        "semantic_model.layer1": (256, 4),
        "semantic_model.layer2": (512, 8),
        "semantic_model.layer3": (1024, 16),
        "semantic_model.layer4": (2048, 32),
    }
    early = model.activations(x, ["semantic_model.layer1"])
    assert torch.equal(early["semantic_model.layer1"], acts["semantic_model.layer1"])
    with pytest.raises(IQAAdapterError, match="Did you mean 'semantic_model.layer1'"):
        model.activations(x, ["semantic_model.layer_1"])


# -- percentiles and z-scores --------------------------------------------------------------------------------
class MeanScore(torch.nn.Module):
    """Stands in for a pyiqa metric: the score of an image is its mean pixel value times `scale`."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.dummy_param = torch.nn.Parameter(torch.empty(0))

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) * self.scale


@pytest.mark.parametrize("name", ["topiq_nr", "laion_aes"])
def test_percentiles_and_z_scores_agree_with_the_table(name):
    row = TABLE[name]
    spec = specs.get_spec(name)
    scale = 10.0 if spec.score_range[1] > 1 else 1.0  # images hold raw/scale in [0, 1]
    model = iqa.IQAModel(name, spec, MeanScore(scale), pack.adapter.default_norm_table().get(name))
    raws = [
        row["percentiles"]["1"],
        row["percentiles"]["50"],
        row["percentiles"]["99"],
        (row["percentiles"]["25"] + row["percentiles"]["75"]) / 2,
        max(row["min"] - 0.01 * scale, 0.0),
        min(row["max"] + 0.01 * scale, scale),
    ]
    image = torch.stack([torch.full((32, 32, 3), r / scale) for r in raws])
    scores, pct, z, table, plot = score_node(image, model)["result"][:5]
    assert scores == pytest.approx(raws, abs=1e-5)
    for s, p, zz in zip(scores, pct, z):
        assert zz == pytest.approx((s - row["mean"]) / row["std"], abs=1e-4)
        knots = (
            [(0.0, row["min"])] + sorted((float(k), v) for k, v in row["percentiles"].items()) + [(100.0, row["max"])]
        )
        expected = (
            0.0
            if s <= row["min"]
            else 100.0
            if s >= row["max"]
            else float(np.interp(s, [v for _, v in knots], [k for k, _ in knots]))
        )
        assert p == pytest.approx(expected, abs=1e-3)
    assert pct[1] == pytest.approx(50.0, abs=1e-3) and pct[2] == pytest.approx(99.0, abs=1e-3)
    assert pct[4] == 0.0 and pct[5] == 100.0
    assert f"{z[2]:.4g}" in table and plot.shape == (1, 320, 512, 3)


# -- bad input --------------------------------------------------------------------------------------------------
def test_greyscale_and_rgba_are_converted(network_attempts):
    model = load("entropy")
    rgb = calibration_batch()[:2, :128, :128]
    grey = rgb.mean(-1, keepdim=True)
    ref_rgb = score_node(rgb, model)["result"][0]
    # Exact: to_rgb_nchw turns each pair into the same values in the same memory layout, so entropy runs the
    # same kernels on both.
    assert score_node(torch.cat([rgb, torch.rand(2, 128, 128, 1)], -1), model)["result"][0] == ref_rgb  # alpha ignored
    assert score_node(grey, model)["result"][0] == score_node(grey.expand(-1, -1, -1, 3), model)["result"][0]
    with pytest.raises(IQAAdapterError, match="5 channels"):
        score_node(torch.rand(1, 64, 64, 5), model)
    with pytest.raises(IQAAdapterError, match="NaN"):
        score_node(torch.full((1, 64, 64, 3), float("nan")), model)


def test_empty_batch_and_tiny_images(iqa_dir, niqe_params):
    shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
    niqe = load("niqe")
    with pytest.raises(IQAAdapterError, match="empty"):
        score_node(torch.zeros(0, 128, 128, 3), niqe)
    with pytest.raises(IQAAdapterError, match=r"64x64 px are too small for 'niqe', which needs at least 96 px"):
        score_node(torch.rand(1, 64, 64, 3), niqe)
    with pytest.raises(IQAAdapterError, match="at least 224 px"):
        random_model("liqe").score(torch.rand(1, 3, 200, 300))


@pytest.mark.parametrize("name", ["piqe", "entropy"])
def test_non_differentiable_metric_refuses_gradients(name):
    model = load(name)
    with pytest.raises(IQAAdapterError, match=f"'{name}' is not differentiable"):
        guided_scores(model, torch.rand(1, 3, 64, 64, requires_grad=True))
    with pytest.raises(IQAAdapterError, match="not an IQA model|connect Load IQA Model"):
        score_node(torch.rand(1, 64, 64, 3), "not a model")


# -- the cache and devices --------------------------------------------------------------------------------------
def test_loads_share_one_model_and_the_cache_is_bounded(iqa_dir, niqe_params):
    iqa.clear_cache()
    shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
    a, b = load("niqe"), load("niqe", device="cpu")
    assert a.metric is b.metric and b.compute == torch.device("cpu")
    os.utime(iqa_dir / NIQE_FILE, ns=(1, 1))  # a replaced file is noticed
    c = load("niqe")
    assert c.metric is not a.metric
    for name in ("piqe", "entropy", "cnniqa"):
        random_iqa.load_random_iqa_model(name) if name == "cnniqa" else iqa.load_iqa_model(name)
    assert len(iqa.cached_models()) == iqa.CACHE_SIZE and all(m.metric is not c.metric for m in iqa.cached_models())


def test_calls_move_to_the_compute_device_and_back(monkeypatch):
    """Load when used, offload after: spied moves (this machine has no second device)."""
    model = random_model("cnniqa")
    moves: list = []
    monkeypatch.setattr(iqa.IQAModel, "_move", lambda self, device: moves.append(torch.device(device)))
    gpu = model.with_device("cuda:0")
    gpu.score(torch.rand(1, 3, 64, 64))
    assert moves == [torch.device("cuda:0"), torch.device("cpu")]
    moves.clear()
    with pytest.raises(IQAAdapterError):
        gpu.score(torch.rand(1, 3, 8, 8))  # too small: the model still goes back home
    assert moves == [torch.device("cuda:0"), torch.device("cpu")]
    moves.clear()
    model.with_device("cpu").score(torch.rand(1, 3, 64, 64))
    assert moves == [] and model.compute is None, "views share the network but not the device choice"
    import copy

    assert copy.deepcopy({"m": gpu})["m"] is gpu, "host clones share the IQA_MODEL rather than copy the network"
    assert all(p.device.type == "cpu" and not p.is_inference() for p in model.net.parameters())


def test_score_runs_through_the_real_executor(iqa_dir, niqe_params, workspace):
    from host_run import execute

    shutil.copy(niqe_params, iqa_dir / NIQE_FILE)
    input_dir = Path(host.folder_paths().get_input_directory())
    input_dir.mkdir(parents=True, exist_ok=True)
    Image.open(CALIBRATION / "I03.bmp").convert("RGB").save(input_dir / "iqa_I03.png")
    run = execute(
        {
            "img": {"class_type": "LoadImage", "inputs": {"image": "iqa_I03.png"}},
            "m": {"class_type": "IQALoadModel", "inputs": {"metric": "niqe", "allow_download": False}},
            "s": {"class_type": "IQAScore", "inputs": {"image": ["img", 0], "iqa_model": ["m", 0], "batch_size": 1}},
            "p": {"class_type": "PreviewImage", "inputs": {"images": ["s", 4]}},
        }
    )
    assert run.ok, run.error_message
    assert_niqe_matches_reference(run.executor.outputs["s"][0], first=1)  # I03 alone
    shown = [d for e, d in run.messages if e == "executed" and d.get("node") == "s"]
    assert shown and "niqe (lower is better)" in shown[0]["output"]["text"][0]


def test_folder_search_survives_a_symlink_loop(tmp_path):
    """A link back up the tree in models/iqa must not make the weight lookup walk forever."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "w.pth").write_bytes(b"x")
    assert weights._find_in_tree(str(tmp_path), "w.pth") == str(tmp_path / "z" / "w.pth")
    assert weights._find_in_tree(str(tmp_path), "missing.pth") is None
