"""Safe loading, in-process on the real host.

* No pickle runs code: a scan of the pack's runtime source (what the host imports) finds every torch.load
  with weights_only=True, no pickle-family module, no eval/exec, no network module; and at run time a
  pickle that would run code is refused both as an adapter and as an IQA weight file. pyiqa reads its own
  checkpoints with weights_only=False; the pack's weight gate forces weights_only=True for the whole build.
* Metadata and sidecar JSON are parsed with size limits (adapter/metadata.py MAX_JSON_BYTES), and an
  oversized sidecar is refused from its size, without being read.
* Loader names resolve only inside the registered model folders: '../', nested '..', absolute paths and
  unknown metric names are refused by the pack itself, even when the host's validation is bypassed.
"""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

import conftest
import pytest
import torch
from safetensors.torch import save_file

pack = conftest.pack
tiny = conftest.fixtures.tiny_models
A = pack.adapter
Err = A.IQAAdapterError
host = pack.nodes.host
weights = pack.guidance.weights
iqa = pack.guidance.iqa_models
LoadIQAAdapter = pack.nodes.load_adapter.LoadIQAAdapter
META = {"metrics": ["topiq_nr", "laion_aes"], "use_flag": False, "pos_encode_L": 0}

RUNTIME = [conftest.REPO / "__init__.py"] + sorted(
    p for d in ("adapter", "nodes", "guidance") for p in (conftest.REPO / d).rglob("*.py")
)
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
NETWORK_MODULES = {"socket", "urllib.request", "http.client", "requests", "httpx", "aiohttp", "ftplib", "smtplib"}
# The one place that refers to torch.load without calling it: the weight gate's forced weights_only=True
# wrapper (tested at run time below).
TORCH_LOAD_REFERENCES = {"guidance/weights.py": 1}


class Payload:
    """Unpickling this creates a directory: the evidence that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<not a constant>"
    return None


def scan(path: Path) -> tuple[list[str], int]:
    """(problems, references to torch.load that are not a safe call) in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(conftest.REPO) if conftest.REPO in path.parents else path.name
    problems, calls = [], set()
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name == "torch.load":
                calls.add(id(node.func))
                if _kw(node, "weights_only") is not True:
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif (
                name.split(".")[-1] == "load"
                and name.split(".")[0] in ("np", "numpy")
                and _kw(node, "allow_pickle") is not None
            ):
                problems.append(f"{where}: numpy load with allow_pickle")
            elif name in ("yaml.load", "yaml.unsafe_load", "torch.jit.load", "eval", "exec"):
                problems.append(f"{where}: {name}")
            elif name.endswith("load_torch_file") and _kw(node, "safe_load") is False:
                problems.append(f"{where}: load_torch_file(safe_load=False)")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "torch"
                and any(a.name == "load" for a in node.names)
            ):
                problems.append(f"{where}: from torch import load")
            for m in mods:
                if m.split(".")[0] in PICKLE_MODULES:
                    problems.append(f"{where}: imports {m}")
                if m in NETWORK_MODULES or m.split(".")[0] in {"requests", "httpx", "aiohttp", "socket"}:
                    problems.append(f"{where}: imports network module {m}")
    loose = sum(
        1 for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _dotted(n) == "torch.load" and id(n) not in calls
    )
    return problems, loose


def test_runtime_source_loads_pickles_only_with_weights_only_and_has_no_network_code():
    assert len(RUNTIME) > 20 and all(p.is_file() for p in RUNTIME)
    problems, loose = [], {}
    for path in RUNTIME:
        found, n = scan(path)
        problems += found
        if n:
            loose[str(path.relative_to(conftest.REPO))] = n
    assert problems == []
    assert loose == TORCH_LOAD_REFERENCES, "torch.load referenced without a weights_only=True call"


def test_the_scan_catches_what_it_looks_for(tmp_path):
    """The scan is not vacuous: each forbidden form in a sample file is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch, socket\nfrom torch import load\n"
        "a = torch.load('x')\nb = torch.load('x', weights_only=False)\nc = torch.load\n"
        "d = eval('1')\nimport numpy as np\ne = np.load('x', allow_pickle=True)\n"
    )
    problems, loose = scan(bad)
    text = "\n".join(problems)
    for expected in (
        "imports pickle",
        "imports network module socket",
        "from torch import load",
        ":4: torch.load without",
        ":5: torch.load without",
        "eval",
        "allow_pickle",
    ):
        assert expected in text, (expected, text)
    assert loose == 1


def test_an_unsafe_adapter_pickle_never_runs(tmp_path):
    marker = tmp_path / "ran"
    for suffix in (".pt", ".bin", ".ckpt", ".pth"):
        path = tmp_path / f"evil{suffix}"
        torch.save({"image_proj": Payload(marker), "ip_adapter": {"1.to_k_ip.weight": torch.zeros(1)}}, path)
        (tmp_path / "evil.json").write_text(json.dumps(META))
        with pytest.raises(Err, match=f"evil{suffix}.*pickled Python objects.*never loaded.*download it again"):
            A.IQAAdapter.load(path)
        assert not marker.exists(), f"loading {path.name} ran code"


def test_an_unsafe_iqa_weight_file_never_runs(tmp_path):
    """TOPIQ's checkpoint name in the search folder, holding a pickle that would run code: pyiqa asks for
    weights_only=False, the gate loads it with weights_only=True and the build fails naming the file."""
    marker = tmp_path / "ran"
    folder = tmp_path / "iqa"
    folder.mkdir()
    ckpt = folder / "cfanet_nr_koniq_res50-9a73138b.pth"
    torch.save({"params": Payload(marker)}, ckpt)
    with pytest.raises(Err) as info:
        iqa.build_iqa_model("topiq_nr", search_dirs=[str(folder)])
    assert str(ckpt) in str(info.value) and "Replace it with a fresh copy" in str(info.value)
    assert "pickled Python objects" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists(), "an IQA weight file ran code"


def test_inside_the_gate_even_an_explicit_weights_only_false_is_safe(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "x.pth"
    torch.save(Payload(marker), path)
    real = torch.load
    with weights.weight_gate(weights.WeightSource(metric="test")):
        assert torch.load is not real
        with pytest.raises(Exception, match="(?i)weights only load failed"):
            torch.load(path, weights_only=False)
        ok = tmp_path / "ok.pth"
        torch.save({"w": torch.ones(2)}, ok)
        assert torch.equal(torch.load(ok, weights_only=False)["w"], torch.ones(2))  # plain tensors still load
    assert torch.load is real, "the gate restores torch.load"
    assert not marker.exists()


# -- JSON size limits ------------------------------------------------------------------------------------


def _adapter(path: Path, header: str | None) -> Path:
    sd = tiny.adapter_state("sd15", 2)
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(path),
        metadata=None if header is None else {"iqa_adapter": header},
    )
    return path


@pytest.mark.parametrize("size, ok", [(A.metadata.MAX_JSON_BYTES - 200, True), (A.metadata.MAX_JSON_BYTES + 1, False)])
def test_header_and_override_json_limits(tmp_path, size, ok):
    def doc(n: int) -> str:
        base = json.dumps(dict(META, comment=""))
        return json.dumps(dict(META, comment="x" * (n - len(base))))

    text = doc(size)
    assert len(text.encode()) == size
    path = _adapter(tmp_path / "a.safetensors", text)
    for call in (
        lambda: A.IQAAdapter.load(path),
        lambda: A.IQAAdapter.load(
            _adapter(tmp_path / "b.safetensors", None), A.metadata.parse_json_text(text, "the node's metadata_override")
        ),
    ):
        if ok:
            assert call().metadata.metrics == tuple(META["metrics"])
        else:
            with pytest.raises(Err, match="over 64 KiB"):
                call()


def test_an_oversized_sidecar_is_refused_from_its_size_without_being_read(tmp_path, monkeypatch):
    path = _adapter(tmp_path / "a.safetensors", None)
    side = tmp_path / "a.json"
    with open(side, "wb") as f:  # a sparse 8 GiB file: reading it would take long and fill memory
        f.truncate(8 * 2**30)
    reads = []
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or real_read(self, *a, **k))
    t0 = time.perf_counter()
    with pytest.raises(Err, match="Sidecar a.json is over 64 KiB.*Replace it"):
        A.IQAAdapter.load(path)
    assert time.perf_counter() - t0 < 2.0 and side not in reads


# -- names resolve inside the registered folders only ----------------------------------------------------


@pytest.fixture()
def folders(adapter_dir, tmp_path):
    """A good adapter in the registered folder and in a subfolder, and one outside every model folder."""
    inside = tiny.write_adapter(adapter_dir / "safe_inside.safetensors", "sd15", META)
    sub = tiny.write_adapter(adapter_dir / "safe_sub" / "nested.safetensors", "sd15", META)
    outside = tiny.write_adapter(adapter_dir.parent / "safe_outside.safetensors", "sd15", META)
    yield inside, sub, outside
    for p in (inside, sub, outside):
        p.unlink()
    sub.parent.rmdir()


def test_loader_names_resolve_only_inside_the_model_folders(folders):
    inside, sub, outside = folders
    listed = host.model_file_list(host.ADAPTER_FOLDER)
    assert "safe_inside.safetensors" in listed and os.path.join("safe_sub", "nested.safetensors") in listed
    assert not [n for n in listed if ".." in n or os.path.isabs(n)]
    assert host.model_file_path(host.ADAPTER_FOLDER, "safe_inside.safetensors") == str(inside)
    assert host.model_file_path(host.ADAPTER_FOLDER, "safe_sub/nested.safetensors") == str(sub)
    node = LoadIQAAdapter()
    for name in (
        "../safe_outside.safetensors",
        "safe_sub/../../safe_outside.safetensors",
        str(outside),
        "./../safe_outside.safetensors",
        "safe_sub/../../../models/safe_outside.safetensors",
    ):
        with pytest.raises(Err, match="not found in the 'iqa_adapter' folder"):
            host.model_file_path(host.ADAPTER_FOLDER, name)
        with torch.inference_mode(), pytest.raises(Err, match="not found in the 'iqa_adapter' folder"):
            node.load(name, "")  # the node itself, as if the host's validation had been bypassed
    with torch.inference_mode():
        assert node.load("safe_sub/nested.safetensors", "")[0].spec.num_layers == 16


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "topiq_nr/../musiq"])
def test_iqa_metric_names_are_registry_names_only(name):
    with pytest.raises(Err, match="Unknown IQA metric"):
        iqa.load_iqa_model(name)
