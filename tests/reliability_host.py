"""Shared by the reliability tests: test hosts (the real HTTP server in a subprocess) with this pack, the
fixture packs and a network guard, tiny adapters on disk, a small API graph, and image digests.

Each host runs in its own workspace, single-threaded (OMP_NUM_THREADS=1, as on CI), with
tests/netguard/sitecustomize.py on its PYTHONPATH: every non-loopback connection or name lookup it
attempts is refused and logged with its Python stack (see that file).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Iterator

import conftest
import numpy as np
import server_host  # (also puts scripts/ on sys.path)
from PIL import Image
from workflow_host import HostServer, PromptFailed, PromptRejected, make_workspace  # noqa: F401

TESTS = Path(__file__).resolve().parent
RELIABILITY_NODES = TESTS / "reliability_nodes"
NETGUARD = TESTS / "netguard"
PACK_DIR = conftest.REPO.resolve()

LAYOUT = "sd15"  # the tiny SD1.5 layout: 16 cross-attention layers, a fast prompt
QUALITY_META = {
    "metrics": ["topiq_nr", "laion_aes"],
    "use_flag": False,
    "pos_encode_L": 0,
    "normalized": True,
    "kind": "quality",
    "base_model": "sd15",
    "comment": "random weights, tests only",
}
REFERENCE_META = {
    "kind": "reference",
    "base_model": "sd15",
    "comment": "random weights, tests only",
    "embedding": {"spec": "topiq_nr_resnet50_meanstd", "resolution": 64},
}
REFERENCE_DIM = 2 * (256 + 512 + 1024 + 2048)
QUALITY = "quality_sd15.safetensors"
QUALITY_B = "quality_sd15_b.safetensors"
REFERENCE = "reference_sd15.safetensors"


def tiny_models():
    return conftest.fixtures.tiny_models


def write_good_adapters(folder: Path) -> None:
    """The adapters every reliability host has: two quality adapters (different weights) and a reference one."""
    tiny = tiny_models()
    tiny.write_adapter(folder / QUALITY, LAYOUT, QUALITY_META, seed=11)
    tiny.write_adapter(folder / QUALITY_B, LAYOUT, QUALITY_META, seed=12)
    tiny.write_adapter(folder / REFERENCE, LAYOUT, REFERENCE_META, input_dim=REFERENCE_DIM, seed=13)


class Host:
    """One started HostServer, plus the network-guard log of its process tree."""

    def __init__(self, server: HostServer, netlog: Path):
        self.server, self.netlog = server, netlog

    def __getattr__(self, name):  # queue, wait, run, request, get, alive, output_images, workspace, proc ...
        return getattr(self.server, name)

    def network_attempts(self) -> list[dict]:
        out = []
        for f in sorted(self.netlog.glob("*.jsonl")):
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return out

    def rss(self) -> int:
        """Resident memory of the host process, in bytes."""
        import psutil

        return psutil.Process(self.server.proc.pid).memory_info().rss


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _guarded_env(netlog: Path) -> Iterator[None]:
    """os.environ as the host processes get it: the network guard on PYTHONPATH, one thread."""
    keys = ("PYTHONPATH", "IQA_NETGUARD_DIR")
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in keys}
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(NETGUARD)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])
        )
        os.environ["IQA_NETGUARD_DIR"] = str(netlog)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def prepare_workspace(root: Path) -> Path:
    """A workspace with the pack, both fixture packs and the good adapters."""
    ws = make_workspace(Path(root) / "ws", fixtures=True)
    (ws / "custom_nodes" / "iqa_reliability_nodes").symlink_to(RELIABILITY_NODES)
    write_good_adapters(ws / "models" / "iqa_adapter")
    return ws


@contextlib.contextmanager
def running_hosts(*roots: Path) -> Iterator[list[Host]]:
    """Start one host per prepared root (concurrently: startup is mostly waiting); stop them all on exit."""
    hosts: list[Host] = []
    for root in roots:
        root = Path(root)
        netlog = root / "netguard"
        netlog.mkdir(parents=True, exist_ok=True)
        hosts.append(
            Host(HostServer(root / "ws", log_path=root / "host.log", threads=1, host=server_host.host()), netlog)
        )
    errors: list[BaseException] = []

    def start(h: Host) -> None:
        try:
            h.server.start()
        except BaseException as e:  # noqa: BLE001 - reported below, after every start has finished
            errors.append(e)

    try:
        threads = []
        for h in hosts:
            with _guarded_env(h.netlog):  # held until the process exists: its environment is then fixed
                t = threading.Thread(target=start, args=(h,))
                t.start()
                _wait_spawned(h, t)
            threads.append(t)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        yield hosts
    finally:
        for h in hosts:
            h.server.stop()


def _wait_spawned(h: Host, thread: threading.Thread) -> None:
    """Until the host's process exists (or its start failed)."""
    import time

    while h.server.proc is None and thread.is_alive():
        time.sleep(0.01)


# -- the small graph --------------------------------------------------------------------------------------


def graph(seed: int, adapter: str = QUALITY, size: int = 64, batch: int = 1, steps: int = 3) -> dict:
    """A tiny text-to-image graph: one KSampler on the plain model and one on the Quality-Conditioned model,
    both saved. The loader nodes ("model", "pos", "neg", "adapter") keep the same inputs in every prompt,
    so the host's cache hands every prompt the same MODEL object: a patch left on it would show up.

    The negative prompt has 7 tokens and the positive 8, so the host never concatenates cond and uncond
    into one batch. Whether it does otherwise depends on the RAM free at that moment, and with very little
    free it also chunks attention differently: the images would then differ in the last bit, and the tests
    compare them exactly."""
    sampler = {
        "seed": seed,
        "steps": steps,
        "cfg": 4.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
        "positive": ["pos", 0],
        "negative": ["neg", 0],
        "latent_image": ["latent", 0],
    }
    return {
        "model": {"class_type": "IQATestTinyModel", "inputs": {"layout": LAYOUT, "seed": 0}},
        "pos": {"class_type": "IQATestTinyConditioning", "inputs": {"layout": LAYOUT, "seed": 1, "tokens": 8}},
        "neg": {"class_type": "IQATestTinyConditioning", "inputs": {"layout": LAYOUT, "seed": 2, "tokens": 7}},
        "adapter": {"class_type": "IQAAdapterLoader", "inputs": {"adapter_name": adapter, "metadata_override": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "qc": {
            "class_type": "IQAQualityCondition",
            "inputs": {
                "model": ["model", 0],
                "iqa_adapter": ["adapter", 0],
                "targets": "99",
                "target_mode": "percentile",
                "scale": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "uncond": "zeros",
                "negative_strength": 0.5,
            },
        },
        "ks": {"class_type": "KSampler", "inputs": dict(sampler, model=["qc", 0])},
        "ks_plain": {"class_type": "KSampler", "inputs": dict(sampler, model=["probe", 0])},
        "probe": {"class_type": "IQARelPlainModelProbe", "inputs": {"model": ["model", 0], "nonce": seed}},
        "img": {"class_type": "IQATestLatentToImage", "inputs": {"samples": ["ks", 0]}},
        "img_plain": {"class_type": "IQATestLatentToImage", "inputs": {"samples": ["ks_plain", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["img", 0], "filename_prefix": "rel"}},
        "save_plain": {
            "class_type": "SaveImage",
            "inputs": {"images": ["img_plain", 0], "filename_prefix": "rel_plain"},
        },
    }


def plain_only(prompt: dict) -> dict:
    """The same graph without any node of this pack: the plain model's branch only."""
    p = copy.deepcopy(prompt)
    for k in ("adapter", "qc", "ks", "img", "save"):
        p.pop(k)
    return p


def image_digest(path: Path) -> str:
    """Digest of an image's pixels and shape (PNG metadata such as the embedded prompt is left out)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGBA"))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def error_text(exc: BaseException) -> str:
    """What the user sees of a failed prompt: the execution error, or the 400 body's messages."""
    if isinstance(exc, PromptFailed):
        e = exc.error
        return f"{e.get('node_type')}: {e.get('exception_type')}: {e.get('exception_message')}"
    if isinstance(exc, PromptRejected):
        body = exc.body if isinstance(exc.body, dict) else {"error": exc.body}
        parts = [json.dumps(body.get("error", ""))]
        for node_id, ne in (body.get("node_errors") or {}).items():
            for err in ne.get("errors", []):
                parts.append(f"{ne.get('class_type')} [{node_id}]: {err.get('message')}: {err.get('details')}")
        return "\n".join(parts)
    return f"{type(exc).__name__}: {exc}"


def pack_frames(stack: list[str]) -> list[str]:
    """Frames of a recorded stack that are this pack's own code (not the tests, not libraries)."""
    out = []
    for frame in stack:
        path = frame.rsplit(":", 1)[0]
        try:
            resolved = Path(path).resolve()
        except OSError:
            continue
        if PACK_DIR in resolved.parents and TESTS not in resolved.parents and ".venv" not in resolved.parts:
            out.append(frame)
    return out
