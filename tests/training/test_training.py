"""python -m training train / export / convert, end to end on the real host's classes at toy size.

The base is a toy checkpoint (toy/: the host's UNet classes, a pixel-space "VAE" and a text table) with
random weights, the data a folder of small images with caption sidecars, the scores a Parquet file as
`score` writes it. Runs go through the real command line in subprocesses (and accelerate launch for two
processes); bad input goes through the same entry point in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from helpers import TWO_CPU_PROCESSES, accelerate_launch
from PIL import Image
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow

REPO = conftest.REPO
METRIC = "piqe"
IMAGES = 8
CAPTIONS = ("a photo of coffee", "a photo of a cat")


def _env() -> dict[str, str]:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    # accelerate's CPU processes: torchrun's launcher (--multi_gpu) with gloo, forced onto the CPU
    env["ACCELERATE_USE_CPU"] = "true"
    return env


def run_cli(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + ["-m", "training", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def cli_error(capsys, *args: str) -> str:
    """The message of a TrainingError from the command line, run in-process (exit status 2)."""
    from training.cli import main

    assert main(list(args)) == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A random toy base, 8 captioned images, their scores and normalisation table."""
    from toy.model import build_model, build_text, default_config, save_toy_checkpoint
    from toy.text import ToyCLIP, build_vocab

    root = tmp_path_factory.mktemp("training")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    keys, scores = [], []
    for i in range(IMAGES):
        smooth = np.cumsum(rng.normal(size=(64, 64, 3)), axis=0)
        pixels = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(CAPTIONS[i % 2])
        keys.append(f"img{i}")
        scores.append(10.0 + 7.0 * i)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": keys, METRIC: scores}), root / "scores.parquet")
    v = np.array(scores)
    table = {
        "format": "iqa-adapter-norm-table/1",
        "source": "test images",
        "metrics": {
            METRIC: {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
                "percentiles": {str(p): float(np.percentile(v, p)) for p in range(1, 100)},
            }
        },
    }
    (root / "scores.norm.json").write_text(json.dumps(table))
    cfg = default_config(build_vocab(CAPTIONS))
    model = build_model(cfg, seed=0)
    # The toy's own initialisation is a diffusion model's: zero output layers, which pass no gradient to
    # the adapter. A trained base has none; dense random weights stand in for it.
    conftest.fixtures.tiny_models.fill_(model.model.diffusion_model, seed=0)
    save_toy_checkpoint(root / "base.safetensors", model, ToyCLIP(build_text(cfg)), cfg, dtype=torch.float32)
    return {"root": root, "images": images, "scores": root / "scores.parquet", "base": root / "base.safetensors"}


def train_args(world: dict[str, Path], out: Path, *extra: str, batch: int = 2, steps: int = 4) -> list[str]:
    return [
        "train",
        "--plugin",
        "toy",
        "--base",
        str(world["base"]),
        "--data",
        str(world["images"]),
        "--scores",
        str(world["scores"]),
        "--metrics",
        METRIC,
        "--resolution",
        "64",
        "--batch-size",
        str(batch),
        "--steps",
        str(steps),
        "--out",
        str(out),
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--shuffle-buffer",
        "1",
        "--seed",
        "7",
        "--lr",
        "1e-3",
        *extra,
    ]


def adapter_at(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step-{step:06d}" / "adapter.safetensors"))


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a)


@pytest.fixture(scope="module")
def single(world) -> Path:
    """The reference run: one process, batch 2, 4 steps, exported in fp32."""
    out = world["root"] / "single"
    run_cli(*train_args(world, out, "--export", str(world["root"] / "single.safetensors")))
    return out


def test_run_writes_checkpoints_log_and_a_loadable_adapter(world, single):
    state = json.loads((single / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["step"] == 4 and state["metrics"] == [METRIC] and state["world_size"] == 1
    rows = (single / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 5  # header + one row per step
    assert (single / "loss.png").stat().st_size > 1000
    # only the adapter trained, and it moved away from its initialisation
    first, last = adapter_at(single, 2), adapter_at(single, 4)
    assert max_rel_diff(first, last) > 1e-4
    adapter = conftest.pack.adapter.IQAAdapter.load(world["root"] / "single.safetensors")
    assert adapter.metadata.metrics == (METRIC,)
    assert 2 * adapter.spec.num_layers == sum(1 for k in last if k.startswith("ip_adapter."))
    # percentiles refer to the adapter's own training set: p50 of its table, not the CC3M one
    assert adapter.norm_table.get(METRIC).raw_from_percentile(50) == pytest.approx(10.0 + 7.0 * 3.5)
    # IQA Score with the adapter connected reports percentiles in that same table (PIQE has none in CC3M's)
    nodes = conftest.pack.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        (piqe,) = nodes["IQALoadModel"]().load(METRIC, False, "cpu")
        images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
        plain = nodes["IQAScore"]().score(images, piqe)["result"]
        own = nodes["IQAScore"]().score(images, piqe, iqa_adapter=adapter)["result"]
    assert all(np.isnan(plain[1])) and own[0] == plain[0]
    st = adapter.norm_table.get(METRIC)
    assert own[1] == [st.percentile_from_raw(v) for v in own[0]] and own[2] == [st.z_from_raw(v) for v in own[0]]


def test_two_processes_match_one_with_the_same_global_batch(world, single):
    """accelerate launch --num_processes 2 (gloo on the CPU), batch 1 each = one process with batch 2."""
    out = world["root"] / "ddp"
    launcher = accelerate_launch(*TWO_CPU_PROCESSES)
    run_cli(*train_args(world, out, batch=1), launcher=launcher)
    state = json.loads((out / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["world_size"] == 2
    checksums = state["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], "the ranks' adapter weights differ"
    # Same samples, same draws (a function of the stream position), same init; only the order of the
    # gradient sum differs (gloo's all-reduce of two half-batch means vs one mean over the batch): float32
    # rounding, about 1e-7 relative per step, which Adam's normalised update passes on at most as a
    # relative change of the same size. 4 steps with lr 1e-3 stay far below 1e-4.
    assert max_rel_diff(adapter_at(out, 4), adapter_at(single, 4)) < 1e-4


def test_resume_ends_where_the_uninterrupted_run_ends(world, single):
    out = world["root"] / "resumed"
    run_cli(*train_args(world, out, steps=2))
    assert not (out / "checkpoints" / "step-000004").exists()
    run_cli(*train_args(world, out, "--resume", "latest", steps=4))
    # The same computation in the same order on the same CPU; the optimizer state comes back bit for bit
    # from accelerate's checkpoint and the draws are functions of the stream position: identical.
    assert max_rel_diff(adapter_at(out, 4), adapter_at(single, 4)) == 0.0
    ours = [r.split(",")[:2] for r in (out / "loss.csv").read_text().splitlines()]
    theirs = [r.split(",")[:2] for r in (single / "loss.csv").read_text().splitlines()]
    assert ours == theirs


def test_round_trip_load_iqa_adapter_gives_the_training_modules_kv(world, single):
    from training.iqa_adapter.trainable import TrainableAdapter

    path = world["root"] / "fp32.safetensors"
    run_cli("export", "--checkpoint", str(single), "--out", str(path), "--dtype", "fp32")
    loaded = conftest.pack.adapter.IQAAdapter.load(path)
    flat = adapter_at(single, 4)
    module = TrainableAdapter(loaded.spec)
    module.load_state_dict(flat)
    vectors = torch.tensor([[-1.5], [0.0], [2.0]])
    with torch.no_grad():
        want = module(vectors)
    got = loaded.layer_kv(loaded.tokens(vectors))
    for a, b in zip(got.keys + got.values, want.keys + want.values):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fine_tune_from_an_adapter_file(world, single):
    out = world["root"] / "finetune"
    start = world["root"] / "single.safetensors"
    run_cli(*train_args(world, out, "--init-adapter", str(start), steps=2))
    tuned = adapter_at(out, 2)
    exported = {k: v.float() for k, v in load_file(str(start)).items()}
    # It started from the file: 2 AdamW steps of lr 1e-3 move a weight by about lr per step (Adam's
    # normalised update is near +-lr early on; 3x covers its bias-corrected second step and the weight
    # decay). A fresh adapter would differ by the weights' own size (0.01-1). And it did train.
    moved = max(float((tuned[k] - exported[k]).abs().max()) for k in exported)
    assert 1e-5 < moved < 3 * 2 * 1e-3


def test_fine_tune_refuses_an_adapter_of_another_base_family(world, capsys, tmp_path):
    sd15 = conftest.fixtures.tiny_models.write_adapter(tmp_path / "sd15.safetensors", "sd15", {"metrics": [METRIC]})
    err = cli_error(capsys, *train_args(world, tmp_path / "out", "--init-adapter", str(sd15)))
    assert "sd15.safetensors" in err and "SD1.5" in err and "base model" in err


def test_convert_from_the_official_layout(world, single, tmp_path):
    """A save_state file in the official key layout: the frozen UNet under unet., the projection under
    qual_proj_model., every attention processor under adapter_modules.{i} (trained ones at odd i)."""
    exported = {k: v.float() for k, v in load_file(str(world["root"] / "single.safetensors")).items()}
    official = {"unet.conv_in.weight": torch.randn(4, 4, 3, 3), "unet.conv_in.bias": torch.randn(4)}
    for key, value in exported.items():
        head, rest = key.split(".", 1)
        official[("qual_proj_model." if head == "image_proj" else "adapter_modules.") + rest] = value
    folder = tmp_path / "checkpoint-1000"
    folder.mkdir()
    save_file(official, str(folder / "model.safetensors"))
    out = tmp_path / "converted.safetensors"
    run_cli(
        "convert",
        "--input",
        str(folder),
        "--out",
        str(out),
        "--metrics",
        METRIC,
        "--dtype",
        "fp32",
        "--norm-table",
        str(world["root"] / "scores.norm.json"),
    )
    converted = load_file(str(out))
    assert converted.keys() == exported.keys()
    for k in exported:
        assert torch.equal(converted[k], exported[k])
    assert conftest.pack.adapter.IQAAdapter.load(out).metadata.metrics == (METRIC,)


def test_convert_refuses_a_file_without_adapter_tensors(capsys, tmp_path):
    save_file({"unet.conv_in.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    err = cli_error(
        capsys, "convert", "--input", str(tmp_path), "--out", str(tmp_path / "x.safetensors"), "--metrics", METRIC
    )
    assert "qual_proj_model" in err and "not" in err


def test_short_training_lowers_the_loss(world, tmp_path):
    """The loss on fixed draws (the same images, noise and timesteps) before and after 12 steps."""
    out = tmp_path / "lowers"
    run_cli(*train_args(world, out, "--checkpoint-every", "12", steps=12, batch=4))
    before, after = fixed_draw_loss(world, None), fixed_draw_loss(world, adapter_at(out, 12))
    assert after < before * 0.98, (before, after)


def fixed_draw_loss(world, flat, vectors: torch.Tensor | None = None) -> float:
    """Mean eps loss of the adapter (its seed-7 initialisation when flat is None) over 16 fixed samples:
    each image twice, conditioned on its z-score, or on vectors[i] ([16, d], e.g. reference embeddings)."""
    from accelerate.utils import set_seed

    from adapter.encoding import encode_quality_vector
    from adapter.layers import find_attn2_layers
    from adapter.live_tokens import LiveQualityTokens
    from adapter.norm_table import NormTable
    from training.common import host
    from training.common.draws import sample_draws
    from training.iqa_adapter.diffusion_loss import adapter_patches, eps_loss
    from training.iqa_adapter.loop import prepare_image
    from training.iqa_adapter.trainable import TrainableAdapter

    base = host.load_base(world["base"], plugins=["toy"])
    layers = find_attn2_layers(base.unet)
    set_seed(7)
    table = NormTable.from_json(world["root"] / "scores.norm.json")
    if vectors is None:
        vectors = torch.tensor([[table.get(METRIC).z_from_raw(10.0 + 7.0 * (i % IMAGES))] for i in range(2 * IMAGES)])
    module = TrainableAdapter.from_base(layers, "linear", 2, vectors.shape[1])
    if flat is not None:
        module.load_state_dict(flat)
    live = LiveQualityTokens()
    patches = adapter_patches([s for s, _ in layers], live, host.attention_function())
    images = torch.stack([prepare_image(Image.open(world["images"] / f"img{i}.png"), 64) for i in range(IMAGES)] * 2)
    with torch.no_grad():
        latents = host.encode_images(base, images)
        context, _ = host.encode_text(base.clip, [CAPTIONS[i % 2] for i in range(2 * IMAGES)])
        draws = sample_draws(
            123,
            list(range(2 * IMAGES)),
            tuple(latents.shape[1:]),
            int(base.model_sampling.sigmas.shape[0]),
            drop_quality=0.0,
            drop_text=0.0,
            drop_both=0.0,
        )
        return float(
            eps_loss(
                base.unet,
                base.model_sampling,
                torch.float32,
                module,
                live,
                patches,
                encode_quality_vector(vectors, False, 0),
                latents,
                context,
                None,
                draws,
            )
        )


def test_gradient_checkpointing_gives_the_same_gradients(world):
    """The trap in training/common/gradient_checkpointing.py: a recomputation that reads the host's shared options dict
    would look up another layer's patch. Gradients with and without checkpointing must agree."""
    from adapter.layers import find_attn2_layers
    from adapter.live_tokens import LiveQualityTokens
    from training.common import host
    from training.common.autograd_safety import make_autograd_safe
    from training.common.draws import sample_draws
    from training.common.gradient_checkpointing import enable_gradient_checkpointing
    from training.iqa_adapter.diffusion_loss import adapter_patches, eps_loss
    from training.iqa_adapter.trainable import TrainableAdapter

    grads = []
    for checkpointed in (False, True):
        base = host.load_base(world["base"], plugins=["toy"])
        unet = base.unet.requires_grad_(False)
        make_autograd_safe(unet)
        if checkpointed:
            assert enable_gradient_checkpointing(unet) > 0
        layers = find_attn2_layers(unet)
        torch.manual_seed(0)
        module = TrainableAdapter.from_base(layers, "mlp", 2, 3)
        live = LiveQualityTokens()
        patches = adapter_patches([s for s, _ in layers], live, host.attention_function())
        g = torch.Generator().manual_seed(1)
        latents = torch.randn(2, *host.encode_images(base, torch.zeros(1, 64, 64, 3)).shape[1:], generator=g)
        context = torch.randn(2, 8, layers[0][0].context_dim, generator=g)
        draws = sample_draws(5, [0, 1], tuple(latents.shape[1:]), 1000, 0.0, 0.0, 0.0)
        loss = eps_loss(
            unet,
            base.model_sampling,
            torch.float32,
            module,
            live,
            patches,
            torch.randn(2, 3, generator=g),
            latents,
            context,
            None,
            draws,
        )
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters()})
    # The same float32 operations, recomputed; but checkpointing changes the order in which the layers'
    # gradients are accumulated into the shared quality tokens (and so into the projection's), and float32
    # addition is not associative: an element may differ by a few units of rounding of the largest terms
    # summed, ~1e-7 of the tensor's largest gradient (measured: 6e-8 on a largest of 2.2, the toy's refiner
    # layer contributing the largest terms). So atol is 1e-6 of each tensor's largest value; a wrong patch
    # looked up in the recomputation changes gradients by their own size.
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = float(grads[0][name].abs().max())
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6 * scale, msg=name)
    assert any(float(g.abs().max()) > 0 for n, g in grads[0].items() if "to_k_ip" in n), "to_k_ip got no gradient"


# -- bad input ---------------------------------------------------------------------------------------------------
def _copy_world(world, tmp_path) -> dict[str, Path]:
    images = tmp_path / "images"
    shutil.copytree(world["images"], images)
    shutil.copy(world["scores"], tmp_path / "scores.parquet")
    shutil.copy(world["root"] / "scores.norm.json", tmp_path / "scores.norm.json")
    return {"root": tmp_path, "images": images, "scores": tmp_path / "scores.parquet", "base": world["base"]}


def test_missing_caption_names_the_image(world, capsys, tmp_path):
    w = _copy_world(world, tmp_path)
    (w["images"] / "img0.txt").unlink()
    err = cli_error(capsys, *train_args(w, tmp_path / "out"))
    assert "img0" in err and "caption" in err


def test_undecodable_image_names_the_file(world, capsys, tmp_path):
    w = _copy_world(world, tmp_path)
    (w["images"] / "img1.png").write_bytes(b"not a png at all")
    err = cli_error(capsys, *train_args(w, tmp_path / "out"))
    assert "img1.png" in err and "decode" in err


def test_scores_lacking_the_metric_or_holding_nan(world, capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    w = _copy_world(world, tmp_path)
    err = cli_error(capsys, *[a if a != METRIC else "niqe" for a in train_args(w, tmp_path / "out")])
    assert "niqe" in err and "scores.parquet" in err
    keys = [f"img{i}" for i in range(IMAGES)]
    pq.write_table(pa.table({"key": keys, METRIC: [1.0, 2.0, float("nan")] + [3.0] * (IMAGES - 3)}), w["scores"])
    err = cli_error(capsys, *train_args(w, tmp_path / "out"))
    assert "img2" in err and "nan" in err and "row 2" in err


def test_dataset_smaller_than_the_batch(world, capsys, tmp_path):
    err = cli_error(capsys, *train_args(world, tmp_path / "out", batch=IMAGES + 1))
    assert f"{IMAGES} images" in err and "--batch-size" in err


def test_base_that_is_not_a_checkpoint(world, capsys, tmp_path):
    bad = tmp_path / "model.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(bad))
    err = cli_error(capsys, *[str(bad) if a == str(world["base"]) else a for a in train_args(world, tmp_path / "out")])
    assert "model.safetensors" in err and "checkpoint" in err
