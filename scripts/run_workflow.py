"""The main job: start the real ComfyUI host headless, queue a workflow through its HTTP prompt queue,
and collect the images and a scores table in an output folder.

Without arguments it runs the quality sweep (percentiles 1/25/50/75/99 in one batch) on a tiny built-in
model and a random tiny adapter, so it works on a fresh machine with no weights. With real weights:
    scripts/demo.sh --models /path/to/ComfyUI/models --checkpoint sd_xl_base_1.0.safetensors --adapter my_iqa_adapter.safetensors
(--models holds checkpoints/ and iqa_adapter/ as in a ComfyUI install.)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "scripts" / "prompts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def prepare_workspace(ws: Path, args: argparse.Namespace) -> dict:
    """custom_nodes/ with the pack (and the test fixtures in tiny mode), models/, and the prompt."""
    nodes = ws / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / "comfyui_iqa_adapter").symlink_to(REPO)
    if args.checkpoint:
        (ws / "models").symlink_to(Path(args.models).resolve())
        text = (PROMPTS / "sdxl_quality_sweep.json").read_text()
        text = text.replace("@CHECKPOINT@", args.checkpoint).replace("@ADAPTER@", args.adapter)
        return json.loads(text)
    (nodes / "iqa_test_fixtures").symlink_to(REPO / "tests" / "fixture_nodes")
    adapter = ws / "models" / "iqa_adapter" / "tiny_sd15_random.safetensors"
    subprocess.run([sys.executable, str(REPO / "tests" / "fixture_nodes" / "tiny_models.py"), str(adapter), "sd15"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((PROMPTS / "tiny_quality_sweep.json").read_text())


def start_server(ws: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "comfy.cmd.main", "--listen", "127.0.0.1", "--port", str(port), "--cwd", str(ws)]
    if not os.environ.get("IQA_USE_GPU"):
        cmd.append("--cpu")
    return subprocess.Popen(cmd, cwd=ws, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"The host exited early (code {proc.returncode}); see {log}")
        try:
            http(base + "/object_info/IQAQualityCondition")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    raise SystemExit(f"The host did not answer within {timeout:.0f} s; see {log}")


def run_prompt(base: str, prompt: dict, timeout: float) -> dict:
    try:
        queued = http(base + "/prompt", {"prompt": prompt, "client_id": "iqa-demo"})
    except urllib.error.HTTPError as e:
        raise SystemExit(f"The host rejected the prompt: {e.read().decode()[:2000]}")
    pid = queued["prompt_id"]
    end = time.time() + timeout
    while time.time() < end:
        hist = http(f"{base}/history/{pid}")
        if pid in hist:
            entry = hist[pid]
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                raise SystemExit(f"The prompt failed: {msgs[0][1].get('exception_message') if msgs else status}")
            return entry
        time.sleep(0.5)
    raise SystemExit(f"The prompt did not finish within {timeout:.0f} s")


def write_scores(out: Path, prompt: dict, images: list[Path]) -> Path:
    """A table of each batch item's target and simple image statistics (IQA scores where the graph has them)."""
    import numpy as np
    from PIL import Image

    targets = [t.strip() for t in prompt["quality"]["inputs"]["targets"].replace("\n", ";").split(";") if t.strip()]
    mode = prompt["quality"]["inputs"]["target_mode"]
    rows = ["| item | target (%s) | mean | contrast (std) | sharpness (mean abs Laplacian) | file |" % mode, "|---|---|---|---|---|---|"]
    for i, path in enumerate(images):
        x = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        lap = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]).mean()
        t = targets[i] if len(targets) > 1 else targets[0]
        rows.append(f"| {i} | {t} | {x.mean():.4f} | {x.std():.4f} | {lap:.4f} | {path.name} |")
    table = out / "scores.md"
    table.write_text("\n".join(rows) + "\n")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "out" / "demo"), help="folder for images and scores (default out/demo)")
    ap.add_argument("--models", help="a ComfyUI models folder holding the checkpoint and the adapter")
    ap.add_argument("--checkpoint", help="SDXL checkpoint file name in <models>/checkpoints (runs the real workflow)")
    ap.add_argument("--adapter", help="IQA-Adapter file name in <models>/iqa_adapter")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the prompt")
    args = ap.parse_args()
    if args.checkpoint and not (args.models and args.adapter):
        ap.error("--checkpoint needs --models and --adapter")
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ws = Path(tempfile.mkdtemp(prefix="iqa-demo-"))
    prompt = prepare_workspace(ws, args)
    port, log = free_port(), out / "host.log"
    proc = start_server(ws, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        entry = run_prompt(base, prompt, args.timeout)
        images = []
        for node_out in entry["outputs"].values():
            for im in node_out.get("images", []):
                src = ws / "output" / im.get("subfolder", "") / im["filename"]
                images.append(Path(shutil.copy2(src, out / im["filename"])))
        if not images:
            raise SystemExit("The prompt finished without images")
        table = write_scores(out, prompt, sorted(images))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(ws, ignore_errors=True)
    print(table.read_text())
    print(f"{len(images)} images and scores.md written to {out}")


if __name__ == "__main__":
    main()
