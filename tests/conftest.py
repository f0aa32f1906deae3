"""Start the real ComfyUI host in-process, with this pack, the test fixtures and the toy world's hidden
loader pack (toy/nodes) in its custom_nodes/.

Everything here runs before the host is imported: the host reads its working directory (COMFYUI_CWD) at
import time. Outbound network connections are refused for the whole session (loopback stays open).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from workflow_host import PACK_NAME  # scripts/ is on pytest's pythonpath (pyproject.toml)

REPO = Path(__file__).resolve().parent.parent
FIXTURES_NAME = "iqa_test_fixtures"
TOY_NODES_NAME = "iqa_toy_nodes"

_workspace = Path(tempfile.mkdtemp(prefix="iqa-host-"))
(_workspace / "custom_nodes").mkdir()
os.symlink(REPO, _workspace / "custom_nodes" / PACK_NAME)
os.symlink(REPO / "tests" / "fixture_nodes", _workspace / "custom_nodes" / FIXTURES_NAME)
os.symlink(REPO / "toy" / "nodes", _workspace / "custom_nodes" / TOY_NODES_NAME)
os.environ["COMFYUI_CWD"] = str(_workspace)
os.environ.setdefault("TORCH_HOME", str(_workspace / "torch_home"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
# Host subprocesses (HTTP server tests, the main job) get the network audit hook of tests/netguard: any
# non-loopback connection or lookup they attempt is refused and logged; the session fails if one is logged.
NETGUARD_LOG = _workspace / "netguard"
NETGUARD_LOG.mkdir()
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "tests" / "netguard")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
)
os.environ["IQA_NETGUARD_DIR"] = str(NETGUARD_LOG)

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127."):
        return _real_connect(self, address)
    raise ConnectionRefusedError(f"tests run offline: connection to {address!r} refused")


socket.socket.connect = _loopback_only

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from comfy.nodes.package import import_all_nodes_in_workspace  # noqa: E402

HOST_NODES = import_all_nodes_in_workspace()
pack = sys.modules[PACK_NAME]
fixtures = sys.modules[FIXTURES_NAME]


@pytest.fixture(scope="session", autouse=True)
def no_network_attempts_by_host_processes():
    yield
    attempts = [line for f in sorted(NETGUARD_LOG.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert not attempts, f"host processes tried to reach the network: {attempts[:3]}"


@pytest.fixture(scope="session")
def workspace() -> Path:
    return _workspace


@pytest.fixture(scope="session")
def adapter_dir(workspace) -> Path:
    d = workspace / "models" / "iqa_adapter"
    d.mkdir(parents=True, exist_ok=True)
    return d


# The newest host's clone semantics, emulated on the tested host. Upstream ComfyUI (0.38.x, comfy/model_patcher.py
# ModelPatcher.clone) copies model_options with comfy.utils.deepcopy_list_dict: new dicts and lists, every other
# object (patch objects, post-CFG functions) shared with the parent. Tests that take the `host_clone` fixture
# run twice: with the tested host's own clone ("deepcopy": a deep copy of model_options, as on the fork and
# 0.3.64) and with the newest one ("newest"). One run covers both, so CI needs no extra stage.
CLONE_SEMANTICS = ("deepcopy", "newest")


def copy_dicts_and_lists(obj, memo: dict | None = None):
    """What deepcopy_list_dict does, written here: dicts and lists copied (recursively), all else shared."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = {copy_dicts_and_lists(k, memo): copy_dicts_and_lists(v, memo) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [copy_dicts_and_lists(v, memo) for v in obj]
    else:
        out = obj
    memo[id(obj)] = out
    return out


def newest_clone(real_clone):
    """ModelPatcher.clone with the newest host's model_options copy. The real clone runs on an empty
    model_options (so nothing in it is deep-copied, no __deepcopy__ hook runs), then gets the list/dict copy."""

    def clone(self, *args, **kwargs):
        options = self.model_options
        self.model_options = {"transformer_options": {}}
        try:
            n = real_clone(self, *args, **kwargs)
        finally:
            self.model_options = options
        n.model_options = copy_dicts_and_lists(options)
        return n

    return clone


@pytest.fixture(params=CLONE_SEMANTICS)
def host_clone(request, monkeypatch) -> str:
    """Run the test under each clone semantics (see CLONE_SEMANTICS); returns the one in force."""
    if request.param == "newest":
        from comfy.model_patcher import ModelPatcher

        monkeypatch.setattr(ModelPatcher, "clone", newest_clone(ModelPatcher.clone))
    return request.param
