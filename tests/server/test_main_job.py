"""The README's main job, end to end: scripts/demo.sh starts the real host's HTTP server, queues the quality
sweep example through the prompt queue and writes images, a score plot and a scores table; with real
weights (here: files under the real names) the same command queues the real SDXL graph instead. The job
starts the host IQA_HOST names (--host), and --server queues on a server that is already running."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import server_host
from PIL import Image
from workflow_host import free_port

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
FIXTURE_TYPES = {"IQATestTinyCheckpoint", "IQATestTinyVAE", "IQATestPatternImage", "IQATestRandomIQAModel"}


def run(*args: str, timeout: float = 600, host: bool = True) -> subprocess.CompletedProcess:
    """scripts/demo.sh with these arguments (and --host for the host under test, unless host=False)."""
    cmd = [str(REPO / "scripts" / "demo.sh"), *args] + (["--host", server_host.host().kind] if host else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def table_rows(path: Path) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]


def test_main_job_runs_the_sweep_through_the_prompt_queue(tmp_path):
    out = tmp_path / "demo"
    proc = run("--out", str(out), "--timeout", "300")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = sorted(out.glob("iqa_sweep_*.png"))
    assert len(images) == 5
    assert list(out.glob("score_plot_*.png")), "the IQA Score plot is collected"
    rows = table_rows(out / "scores.md")
    assert [r[1] for r in rows] == [f"{t} (percentile)" for t in (1, 25, 50, 75, 99)]
    scores = [float(r[2].split("/")[0]) for r in rows]  # PIQE, a real metric that needs no weight file
    assert all(math.isfinite(s) and 0 <= s <= 100 for s in scores), scores
    assert "piqe" in (out / "scores.md").read_text()
    assert [r[-1] for r in rows] == [p.name for p in images]
    prompt = json.loads((out / "prompt.json").read_text())
    assert {n["class_type"] for n in prompt.values()} >= {
        "IQAQualityCondition",
        "IQAScore",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }
    assert str(out) in proc.stdout
    # Without weights the default is the built-in toy world: its trained model and adapter, and the figures.
    assert "IQAToyCheckpoint" in {n["class_type"] for n in prompt.values()}
    assert not FIXTURE_TYPES & {n["class_type"] for n in prompt.values()}
    assert "toy model" in (out / "scores.md").read_text()
    for figure in ("sweep_grid.png", "score_vs_target.png"):
        with Image.open(out / figure) as im:
            assert im.width > 300 and im.height > 100, (figure, im.size)
    # the README's two subjects, a row each: the second from the same graph queued once more
    assert len(sorted(out.glob("subject1_iqa_sweep_*.png"))) == 5
    with Image.open(out / "sweep_grid.png") as im:
        assert im.height > 2 * 192, im.size  # two rows of 64 px images zoomed 3x


def test_the_reference_example_runs_on_the_toy_with_its_sheet(tmp_path):
    """The Reference Quality Transfer example on the toy: four references (clean, blur, noise, JPEG) of one
    photo condition four items from one noise, and the sheet shows each reference beside its output."""
    out = tmp_path / "demo"
    proc = run("--workflow", "Reference Quality Transfer (SDXL)", "--out", str(out), "--timeout", "300")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prompt = json.loads((out / "prompt.json").read_text())
    kinds = {n["class_type"] for n in prompt.values()}
    assert {"IQAToyCheckpoint", "IQAToyReferences", "IQAToyQualityNet", "IQAReferenceQualityTransfer"} <= kinds
    assert not kinds & (FIXTURE_TYPES | {"LoadImage", "VAEEncode"})
    assert len(sorted(out.glob("iqa_reference_transfer_*.png"))) == 4
    with Image.open(out / "reference_sheet.png") as im:
        assert im.width > 300 and im.height > 4 * 192, im.size  # four rows of two 64 px images zoomed 3x
    assert "toy quality net" in (out / "scores.md").read_text()


def test_random_tiny_runs_the_same_graph_on_the_test_stand_ins(tmp_path):
    out = tmp_path / "demo"
    proc = run("--out", str(out), "--timeout", "300", "--random-tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prompt = json.loads((out / "prompt.json").read_text())
    assert "IQATestTinyCheckpoint" in {n["class_type"] for n in prompt.values()}
    assert len(sorted(out.glob("iqa_sweep_*.png"))) == 5
    assert not (out / "sweep_grid.png").exists(), "the toy figures belong to the toy run"


def _placeholder_models(root: Path) -> Path:
    models = root / "models"
    for folder, name in (
        ("checkpoints", "sd_xl_base_1.0.safetensors"),
        ("iqa_adapter", "iqa_adapter_sdxl_topiq_laion.safetensors"),
    ):
        (models / folder).mkdir(parents=True)
        (models / folder / name).write_bytes(b"")
    return models


def test_with_real_weights_the_same_command_queues_the_real_graph(tmp_path):
    """Empty files under the real names: the real graph passes the host's validation and is queued; loading
    the (empty) checkpoint then fails, and the main job says so with the node and the host log."""
    out = tmp_path / "real"
    proc = run(
        "--models",
        str(_placeholder_models(tmp_path)),
        "--score-metric",
        "piqe",
        "--cpu",
        "--out",
        str(out),
        "--timeout",
        "300",
    )
    assert proc.returncode != 0
    assert "The prompt failed" in proc.stderr and "CheckpointLoaderSimple" in proc.stderr, proc.stderr[-3000:]
    prompt = json.loads((out / "prompt.json").read_text())
    kinds = {n["class_type"] for n in prompt.values()}
    assert not kinds & FIXTURE_TYPES and "CheckpointLoaderSimple" in kinds
    ckpt = next(n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert ckpt["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    assert next(n for n in prompt.values() if n["class_type"] == "EmptyLatentImage")["inputs"]["width"] == 1024


def test_real_weights_given_as_file_paths(tmp_path):
    models = _placeholder_models(tmp_path)
    ckpt = models / "checkpoints" / "sd_xl_base_1.0.safetensors"
    adapter = tmp_path / "elsewhere" / "my_adapter.safetensors"
    adapter.parent.mkdir()
    adapter.write_bytes(b"")
    out = tmp_path / "paths"
    proc = run(
        "--checkpoint", str(ckpt), "--adapter", str(adapter), "--score-metric", "piqe", "--cpu", "--out", str(out)
    )
    assert proc.returncode != 0 and "The prompt failed" in proc.stderr, proc.stderr[-3000:]
    prompt = json.loads((out / "prompt.json").read_text())
    loader = next(n for n in prompt.values() if n["class_type"] == "IQAAdapterLoader")
    assert loader["inputs"]["adapter_name"] == "my_adapter.safetensors"


def test_bad_arguments_fail_fast(tmp_path):
    proc = run("--adapter", "not-a-file.safetensors", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--models" in proc.stderr
    proc = run("--workflow", "no_such_workflow", "--out", str(tmp_path / "y"))
    # the message names the examples by title and slug, either of which --workflow takes
    assert proc.returncode != 0 and "'Quality sweep p1 to p99 (SDXL)' (sdxl_quality_sweep)" in proc.stderr, proc.stderr[
        -2000:
    ]


def test_server_option_queues_on_a_running_server_and_leaves_it_running(tmp_path):
    """--server URL: nothing is started; the real graph goes to that server under its own file names."""
    with server_host.running_host(tmp_path / "server") as h:
        models = h.workspace / "models"
        for folder, name in (
            ("checkpoints", "sd_xl_base_1.0.safetensors"),
            ("iqa_adapter", "iqa_adapter_sdxl_topiq_laion.safetensors"),
        ):
            (models / folder).mkdir(parents=True, exist_ok=True)
            (models / folder / name).write_bytes(b"")
        out = tmp_path / "remote"
        proc = run("--server", h.base, "--score-metric", "piqe", "--out", str(out), "--timeout", "300", host=False)
        assert proc.returncode != 0
        assert "The prompt failed" in proc.stderr and "CheckpointLoaderSimple" in proc.stderr, proc.stderr[-3000:]
        assert h.base in proc.stderr, "the error points at the server's own console"
        prompt = json.loads((out / "prompt.json").read_text())
        assert not {n["class_type"] for n in prompt.values()} & FIXTURE_TYPES
        assert h.alive(), "the job must not stop a server it did not start"
        assert not (out / "host.log").exists()


def test_server_option_fails_clearly(tmp_path):
    port = free_port()
    proc = run("--server", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "x"), host=False)
    assert proc.returncode != 0 and "No ComfyUI server answers" in proc.stderr, proc.stderr[-2000:]
    proc = run("--server", "http://127.0.0.1:8188", "--models", str(tmp_path), "--out", str(tmp_path / "y"), host=False)
    assert proc.returncode == 2 and "leave out --models" in proc.stderr
