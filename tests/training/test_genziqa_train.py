"""python -m training genziqa-train on the real host's classes at tiny size: a tiny SD1.5-layout UNet, the
host's CLIP at small width and a random TAESD VAE (as tests/guidance/test_genziqa.py), and a label file of
a few synthetic images (sharp and blurred stripes) with distinct MOS. The runs are in-process: the tiny
model is handed to the training function in place of --base."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import conftest  # noqa: F401  (starts the host)
import numpy as np
import pytest
import torch
from helpers import pack, tiny, tiny_clip
from PIL import Image

from training.cli import build_parser, main
from training.common import host

pytestmark = pytest.mark.slow

gz = importlib.import_module(pack.__name__ + ".guidance.genziqa")
more_nodes = importlib.import_module(tiny.__name__.rsplit(".", 1)[0] + ".more_nodes")
SIZE = 64
STEPS = 30
# (name, stripe period in px, blur passes, MOS): sharper stripes score higher
IMAGES = (("sharp4.png", 4, 0, 80.0), ("sharp8.png", 8, 0, 70.0), ("soft4.png", 4, 2, 40.0), ("soft8.png", 8, 3, 25.0))


def _vae():
    """The random TAESD of the other tests, its latents scaled up to about unit std (as a real VAE's are), so
    that at the training timesteps the noise does not drown the image."""
    import comfy.sd

    state = {**more_nodes._taesd_state(5), "vae_scale": torch.tensor(1 / 16)}
    with torch.inference_mode(False):
        return comfy.sd.VAE(sd=state, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny_sd15.safetensors"
    return host.BaseModel(tiny.tiny_model("sd15", seed=1), tiny_clip(48), _vae(), path)


def _stripes(period: int, blur: int, size: int = SIZE) -> np.ndarray:
    x = np.arange(size)
    img = ((x[None, :] // (period // 2) + x[:, None] // period) % 2).astype(np.float32)
    for _ in range(blur):  # a 3x3 box blur per pass
        p = np.pad(img, 1, mode="edge")
        img = sum(p[i : i + size, j : j + size] for i in range(3) for j in range(3)) / 9
    rgb = np.stack([img, 0.5 * img + 0.25, 1 - img], -1)
    return (rgb * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("genziqa_data")
    images = root / "images"
    images.mkdir()
    for name, period, blur, _ in IMAGES:
        Image.fromarray(_stripes(period, blur)).save(images / name)
    labels = root / "labels.csv"
    with labels.open("w", newline="") as f:  # pyiqa's meta format: name, MOS, then anything
        w = csv.writer(f)
        w.writerow(["image_name", "MOS", "std"])
        w.writerows([name, mos, 1.0] for name, _, _, mos in IMAGES)
    return {"images": images, "labels": labels}


def _args(data, out: Path, *extra: str, labels: Path | None = None):
    argv = ["genziqa-train", "--base", "tiny_sd15.safetensors", "--images", str(data["images"])]
    argv += ["--labels", str(labels or data["labels"]), "--out", str(out), "--resolution", str(SIZE)]
    return build_parser().parse_args(argv + list(extra))


def _loss(out: Path) -> list[float]:
    with (out / "loss.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(base, data, tmp_path_factory):
    from training.genziqa.train import train

    out = tmp_path_factory.mktemp("run")
    path = train(_args(data, out, "--steps", str(STEPS), "--batch-size", "4", "--lr", "1e-2", "--seed", "1"), base=base)
    return out, path


def test_short_training_lowers_the_loss(trained):
    losses = _loss(trained[0])
    assert len(losses) == STEPS and all(np.isfinite(losses))
    # about 0.9 at first (the standardised MOS's variance, less what the untrained file already ranks) and
    # about 0.2 over the last 10 steps on this seed; each step's draws are random, hence the means and margin
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.6 * first, losses


def test_the_exported_file_loads_and_scores_on_the_mos_scale(base, data, trained):
    out, path = trained
    f = gz.load_genziqa(path)
    mos = np.array([m for *_, m in IMAGES])
    offset = json.loads((out / "run.json").read_text())["raw_offset"]
    assert f.meta.calibration == pytest.approx((mos.std(), mos.mean() - mos.std() * offset))
    assert f.meta.image_size == SIZE and f.meta.family == "sd1" and f.context["l"].shape == (16, 48)
    assert len(f.lora) == 16 * 4 * 3
    assert any(v.abs().max() > 0 for k, v in f.lora.items() if k.endswith(".lora_up.weight"))  # the LoRA trained
    scorer = gz.GenzIQAScorer(base.patcher, base.clip, base.vae, f)
    images = torch.stack([torch.from_numpy(_stripes(p, b)).float() / 255 for _, p, b, _ in IMAGES])
    scores = scorer.score_images(images)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    # on the MOS scale and in the MOS order (about 78, 68, 41, 30 for MOS 80, 70, 40, 25 on this seed)
    assert np.abs(scores.numpy() - mos).max() < 0.5 * mos.std(), (scores, mos)
    assert list(np.argsort(scores.numpy())) == list(np.argsort(mos))
    # the percentile table: the trained file's scores of its 4 training images (--table-images 256 > 4)
    stats = f.meta.stats
    assert stats is not None and f.meta.norm_table["count"] == 4 and not stats.lower_better
    pct = np.array([stats.percentile_from_raw(float(v)) for v in scores])
    assert pct[np.argmax(mos)] > 90 and pct[np.argmin(mos)] < 10, pct  # batch vs one-by-one: rounding only
    assert (out / "checkpoints" / f"step-{STEPS:06d}" / "state.json").is_file() and (out / "loss.png").is_file()


def test_prompt_features_with_gradients_match_the_scorers(base):
    """The training route to the CLIP (placeholder words plus a hook) gives the scorer's text features."""
    from training.common.core import guidance
    from training.genziqa.prompts import encode_prompts

    f = guidance("genziqa.fresh").fresh_file(base.patcher, base.clip, "sd1", seed=3)
    ctx = {k: v.clone().requires_grad_(True) for k, v in f.context.items()}
    cond, _ = encode_prompts(base.clip, f.meta.prompts, ctx)
    ref = torch.cat([guidance("genziqa.host").encode_with_context(base.clip, p, f.context)[0] for p in f.meta.prompts])
    torch.testing.assert_close(cond.detach(), ref[:, : cond.shape[1]], atol=1e-5, rtol=1e-5)
    cond.square().sum().backward()
    assert ctx["l"].grad is not None and ctx["l"].grad.abs().sum() > 0


def test_lora_hooks_match_the_hosts_lora_patch(base):
    """The trained LoRA as hooks computes what the host's LoRA loader makes of the exported file."""
    from training.common.core import guidance
    from training.genziqa.trainable import TrainableGenzIQA

    scorer_mod = guidance("genziqa.scorer")
    f = guidance("genziqa.fresh").fresh_file(base.patcher, base.clip, "sd1", up_std=0.05, seed=2, image_size=SIZE)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    patched = scorer_mod.GenzIQAScorer(base.patcher, base.clip, base.vae, f).score_latents(x)
    module = TrainableGenzIQA(f, base.unet)
    plain = scorer_mod.GenzIQAScorer(base.patcher, base.clip, base.vae, f.__class__(f.meta, f.context, {}, f.name))
    with torch.no_grad(), module.lora_on_unet(module()):
        hooked = plain.score_latents(x)
    torch.testing.assert_close(hooked, patched, atol=1e-4, rtol=1e-4)
    assert not any(m._forward_hooks for m in module._targets)  # removed after the block


def test_resume_ends_where_the_uninterrupted_run_ends(base, data, tmp_path):
    from safetensors.torch import load_file

    from training.genziqa.train import train

    common = ("--batch-size", "2", "--lr", "1e-2", "--checkpoint-every", "2")
    whole = train(_args(data, tmp_path / "a", "--steps", "4", *common), base=base)
    train(_args(data, tmp_path / "b", "--steps", "2", *common), base=base)
    resumed = train(_args(data, tmp_path / "b", "--steps", "4", "--resume", "latest", *common), base=base)
    a, b = load_file(str(whole)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    assert _loss(tmp_path / "a") == pytest.approx(_loss(tmp_path / "b"), rel=1e-5)


def test_a_text_encoder_that_takes_no_context_is_refused_by_name(base, data, tmp_path):
    """Neither the host's CLIP (tokens per encoder) nor an encoder with encode_with_context (the toy's)."""
    from training.common.errors import TrainingError
    from training.genziqa.train import train

    class Words:
        def tokenize(self, text):
            return [1, 2, 3]

    other = host.BaseModel(base.patcher, Words(), base.vae, base.path)
    with pytest.raises(TrainingError, match="takes no context vectors"):
        train(_args(data, tmp_path / "out", "--steps", "1"), base=other)


def _labels(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(rows) + ("\n" if rows else ""))
    return path


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_label_files_are_clear_errors(data, capsys, tmp_path):
    def argv(rows):
        labels = _labels(tmp_path, rows)
        return ["genziqa-train", "--base", str(tmp_path / "none.safetensors"), "--images", str(data["images"]),
                "--labels", str(labels), "--out", str(tmp_path / "out"), "--steps", "1"]  # fmt: skip

    err = _error(capsys, argv(["image_name,MOS"]))
    assert "has no label rows" in err and "header row is allowed" in err
    err = _error(capsys, argv([]))
    assert "has no label rows" in err
    err = _error(capsys, argv(["image_name,MOS", "sharp4.png,80", "soft4.png,n/a"]))
    assert "row 3" in err and "'n/a'" in err and "not a finite number" in err
    names = [f"gone{i}.png" for i in range(7)]
    err = _error(capsys, argv(["sharp4.png,80"] + [f"{n},50" for n in names]))
    assert "7 of 8 images" in err and "'gone0.png'" in err and "'gone4.png'" in err and "and 2 more" in err
    assert "'gone5.png'" not in err and "--images" in err
    err = _error(capsys, argv(["sharp4.png,50", "soft4.png,50"]))
    assert "same MOS" in err


def test_images_smaller_than_the_latent_stride_are_named(base, data, tmp_path):
    from training.common.errors import TrainingError
    from training.genziqa.train import train

    Image.fromarray(_stripes(4, 0, size=6)).save(tmp_path / "tiny.png")
    Image.fromarray(_stripes(4, 0)).save(tmp_path / "ok.png")
    labels = _labels(tmp_path, ["ok.png,70", "tiny.png,20"])
    args = _args({"images": tmp_path}, tmp_path / "out", "--steps", "1", labels=labels)
    with pytest.raises(TrainingError, match=r"smaller than the model's latent stride \(8 px.*'tiny.png' \(6x6\)"):
        train(args, base=base)


def test_pooling_and_prompt_options_are_recorded_in_the_file_and_checked_on_resume(base, data, tmp_path):
    from training.common.errors import TrainingError
    from training.genziqa.train import train

    extra = ("--steps", "1", "--batch-size", "2", "--table-images", "0", "--checkpoint-every", "1")
    chosen = ("--pooling-lambda", "0.5", "--attention-term", "good_minus_bad", "--prompts", "Sharp.", "Blurry.")
    path = train(_args(data, tmp_path / "run", *extra, *chosen), base=base)
    meta = gz.load_genziqa(path).meta
    assert (meta.pooling_lambda, meta.attention_term, meta.prompts) == (0.5, "good_minus_bad", ("Sharp.", "Blurry."))
    with pytest.raises(TrainingError, match="pooling_lambda=0.5.*this run has 0.14"):
        train(_args(data, tmp_path / "run", *extra, "--resume", "latest"), base=base)


def test_out_of_range_pooling_and_prompt_options_are_clear_errors(data, capsys, tmp_path):
    argv = ["genziqa-train", "--base", str(tmp_path / "none.safetensors"), "--images", str(data["images"]),
            "--labels", str(data["labels"]), "--out", str(tmp_path / "out"), "--steps", "1"]  # fmt: skip
    assert "--pooling-lambda must be a positive number" in _error(capsys, argv + ["--pooling-lambda", "0"])
    assert "--prompts needs two non-empty texts" in _error(capsys, argv + ["--prompts", "Good.", " "])
