"""The toy world's base: degraded patches, the exact s2d VAE, the word-table CLIP, the toy checkpoint and
its hidden loader node, all on the real host (in-process fork; the server test runs IQA_HOST's host)."""

from __future__ import annotations

import hashlib
import json

import conftest  # noqa: F401  (starts the host; toy/ is imported from the repo root)
import numpy as np
import pytest
import server_host
import torch
from host_run import execute

from toy import patches
from toy.errors import ToyError
from toy.model import (
    build_model,
    build_text,
    default_config,
    is_toy_checkpoint,
    load_toy_checkpoint,
    save_toy_checkpoint,
)
from toy.sources import SOURCES, load_rgb
from toy.text import ToyCLIP, build_vocab
from toy.vae import ToyVAE, empty_latent

CAPTIONS = sorted({s.caption for s in SOURCES})


@pytest.fixture(scope="module")
def photos():
    return [load_rgb(s) for s in SOURCES]


@pytest.fixture(scope="module")
def cfg():
    return default_config(build_vocab(CAPTIONS))


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory, cfg):
    """A toy checkpoint with random weights (fp16, as shipped)."""
    path = tmp_path_factory.mktemp("toy") / "toy_random.safetensors"
    save_toy_checkpoint(path, build_model(cfg, seed=3), build_text(cfg, seed=3))
    return path


def test_patches_are_a_function_of_seed_and_index(photos):
    a = patches.make_patch(photos, 7, 12)
    b = patches.make_patch(photos, 7, 12)
    assert a[0] == b[0] and a[2] == b[2] and np.array_equal(a[1], b[1])
    others = [patches.make_patch(photos, 8, 12)[1], patches.make_patch(photos, 7, 13)[1]]
    assert all(not np.array_equal(a[1], o) for o in others)
    assert a[1].shape == (64, 64, 3) and a[1].dtype == np.uint8


def test_patch_folder_is_reproducible_and_has_sidecars(tmp_path):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run / "patches"
        manifest = patches.write_patches(out, 12, seed=5)
        files = sorted(out.glob("*.png"))
        assert len(files) == 12 and all(f.with_suffix(".txt").read_text().startswith("a photo of") for f in files)
        assert len(manifest.read_text().splitlines()) == 13
        digests.append(hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest())
    assert digests[0] == digests[1]


def test_degradations_span_clean_to_ruined(photos):
    draws = [patches.make_patch(photos, 0, i) for i in range(300)]
    degs = [d for _, _, d in draws]
    # P_CLEAN = 0.05 of 300: expected 15; below 3 or above 35 has probability < 1e-3 (binomial).
    clean = sum(d.blur == d.noise == d.jpeg == 0 for d in degs)
    assert 3 <= clean <= 35
    # The largest level (the quality label's severity) is spread over the whole range, a tenth in each decile.
    worst = np.array([max(d.blur, d.noise, d.jpeg) for d in degs if max(d.blur, d.noise, d.jpeg) > 0])
    assert all(15 <= n <= 45 for n in np.histogram(worst, bins=10, range=(0, 1))[0])
    for kind in ("blur", "noise", "jpeg"):
        levels = [getattr(d, kind) for d in degs if getattr(d, kind) > 0]
        assert min(levels) < 0.2 and max(levels) > 0.9, kind
    assert sum(sum(getattr(d, k) > 0 for k in ("blur", "noise", "jpeg")) >= 2 for d in degs) > 30
    assert len({s for s, _, _ in draws}) == len(SOURCES)
    # Degradation lowers detail: a ruined blur has a far smaller mean gradient than the clean crop.
    crop = patches.random_crop(photos[0], np.random.default_rng(1))
    blurred = patches.degrade(crop, patches.Degradation(1.0, 0.0, 0.0), np.random.default_rng(0))

    def grad(x):
        return np.abs(np.diff(x.astype(float), axis=1)).mean()

    assert grad(blurred) < 0.5 * grad(crop)


def test_pictures_frame_most_of_the_photo(photos):
    """Each picture is a square of 80-100 % of the photo's short side, so the nearest source photo by SSIM
    (toy/recognize.py) is its own, clean or ruined: measured 324 of 324 (these 24, and 300 at seed 5).
    Deterministic pictures; another CPU's rounding could only swap near-equal SSIMs, and the own photo's
    lead is large for most pictures."""
    from toy import recognize

    draws = [patches.make_patch(photos, 3, i) for i in range(24)]
    frac, matches = recognize.recognized_fraction([p for _, p, _ in draws], [SOURCES[s].caption for s, _, _ in draws])
    wrong = [(SOURCES[s].name, d, m) for (s, _, d), m in zip(draws, matches) if m.caption != SOURCES[s].caption]
    assert frac >= 23 / 24, wrong


def test_toy_vae_is_exact_through_the_host_nodes():
    from comfy.nodes import base_nodes

    vae = ToyVAE()
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 64, 64, 3), generator=g).float() / 255.0
    (latent,) = base_nodes.VAEEncode().encode(vae, pixels)
    assert latent["samples"].shape == (2, 192, 8, 8)
    assert latent["samples"].abs().max() <= 1.0
    (back,) = base_nodes.VAEDecode().decode(vae, latent)
    assert back.shape == (2, 64, 64, 3)
    # x*2-1 then (z+1)/2 in float32: at most two roundings of values <= 1, so < 2**-22 of error.
    assert (back - pixels).abs().max() < 2**-22
    # The differentiable path the pack's guidance uses: first_stage_model.decode gives [-1, 1] NCHW.
    img = vae.first_stage_model.decode(latent["samples"])
    assert img.shape == (2, 3, 64, 64) and torch.equal(img, pixels.movedim(-1, 1) * 2 - 1)


def test_toy_clip_through_clip_text_encode(cfg):
    from comfy.nodes import base_nodes

    clip = ToyCLIP(build_text(cfg, seed=1))
    (c1,) = base_nodes.CLIPTextEncode().encode(clip, "a photo of Coffee")
    (c2,) = base_nodes.CLIPTextEncode().encode(clip, "a photo of coffee")
    (c3,) = base_nodes.CLIPTextEncode().encode(clip, "a photo of a cat")
    (c4,) = base_nodes.CLIPTextEncode().encode(clip, "")
    cond = c1[0][0]
    assert cond.shape == (1, cfg["tokens"], cfg["context_dim"]) and "pooled_output" in c1[0][1]
    assert torch.equal(cond, c2[0][0])
    assert not torch.allclose(cond, c3[0][0]) and not torch.allclose(cond, c4[0][0])
    assert clip.tokenize("a photo of zebras")[3] == clip.table.index["<unk>"]


def test_toy_checkpoint_round_trips(toy_file, cfg, tmp_path):
    assert is_toy_checkpoint(toy_file)
    not_toy = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(not_toy), metadata={"iqa_adapter": json.dumps({})})
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert not is_toy_checkpoint(not_toy) and not is_toy_checkpoint(tmp_path / "junk.safetensors")
    assert not is_toy_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(ToyError, match="not a toy checkpoint"):
        load_toy_checkpoint(not_toy)
    with pytest.raises(ToyError, match="not found"):
        load_toy_checkpoint(tmp_path / "missing.safetensors")

    model, clip, vae = load_toy_checkpoint(toy_file)
    ref_unet = build_model(cfg, seed=3).model.diffusion_model.state_dict()
    ref_text = build_text(cfg, seed=3).state_dict()
    got = model.get_model_object("diffusion_model").state_dict()
    assert set(got) == set(ref_unet)
    for k, v in ref_unet.items():  # saved in fp16: the loaded weights are the fp16 rounding, exactly
        assert torch.equal(got[k], v.half().float()), k
    for k, v in clip.table.state_dict().items():
        assert torch.equal(v, ref_text[k].half().float()), k
    assert model.model.latent_format.latent_channels == 192 and vae.latent_channels == 192
    assert model.model.model_sampling.sigmas.shape == (1000,)
    # The file is small: UNet + text table in fp16.
    assert toy_file.stat().st_size < 8_000_000


def test_toy_checkpoint_samples_through_the_host_ksampler(toy_file):
    from comfy.nodes import base_nodes

    model, clip, vae = load_toy_checkpoint(toy_file)
    # Random init has a zero output conv: give the UNet output weights so sampling does something.
    unet = model.get_model_object("diffusion_model")
    with torch.no_grad():
        unet.out[-1].weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    (pos,) = base_nodes.CLIPTextEncode().encode(clip, "a photo of coffee")
    (neg,) = base_nodes.CLIPTextEncode().encode(clip, "")
    latent = {"samples": empty_latent(64, 64, 2)}
    (out,) = base_nodes.common_ksampler(model, 1, 3, 2.0, "euler", "normal", pos, neg, latent)
    assert out["samples"].shape == (2, 192, 8, 8) and torch.isfinite(out["samples"]).all()
    (img,) = base_nodes.VAEDecode().decode(vae, out)
    assert img.shape == (2, 64, 64, 3) and 0 <= img.min() and img.max() <= 1
    assert img.std() > 0.01


def test_hidden_node_pack_loads_the_shipped_toy_model(monkeypatch, tmp_path):
    toy_nodes = __import__("sys").modules[conftest.TOY_NODES_NAME]
    assert "IQAToyCheckpoint" in conftest.HOST_NODES.NODE_CLASS_MAPPINGS
    assert "IQAToyCheckpoint" not in conftest.pack.NODE_CLASS_MAPPINGS  # hidden: not in the pack's menu
    if not toy_nodes.DEFAULT_CHECKPOINT.is_file():
        pytest.fail(f"{toy_nodes.DEFAULT_CHECKPOINT} missing: export it with python -m toy.export_base")
    prompt = {
        "ckpt": {"class_type": "IQAToyCheckpoint", "inputs": {}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a photo of a cat"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "latent": {"class_type": "IQAToyEmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["ckpt", 0],
                "seed": 0,
                "steps": 4,
                "cfg": 3.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "image": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["image", 0]}},
    }
    run = execute(prompt)
    assert run.ok, run.error_message
    img = run.output("image")
    assert img.shape == (1, 64, 64, 3)

    monkeypatch.setattr(toy_nodes, "DEFAULT_CHECKPOINT", tmp_path / "gone.safetensors")
    with pytest.raises(ToyError, match="missing.*train_toy.sh"):
        toy_nodes.IQAToyCheckpoint().load()


@pytest.mark.server
def test_toy_model_samples_on_the_server_host(tmp_path):
    """Through the HTTP prompt queue of IQA_HOST's host (the fork, or upstream 0.3.64)."""
    prompt = {
        "ckpt": {"class_type": "IQAToyCheckpoint", "inputs": {}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a photo of coffee"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "latent": {"class_type": "IQAToyEmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["ckpt", 0],
                "seed": 1,
                "steps": 4,
                "cfg": 3.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "image": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["image", 0], "filename_prefix": "toy"}},
    }
    from PIL import Image

    with server_host.running_host(tmp_path, toy=True) as host:
        assert "IQAToyCheckpoint" in host.info
        files = host.output_images(host.run(prompt, timeout=300))["save"]
    assert len(files) == 2
    for f in files:
        with Image.open(f) as im:
            assert im.size == (64, 64)


def test_base_training_resumes_exactly(tmp_path):
    from toy import train_base
    from toy.model import read_header

    data = tmp_path / "patches"
    patches.write_patches(data, 4, seed=2)
    common = [
        "--data",
        str(data),
        "--batch",
        "2",
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--log-every",
        "1",
        "--save-every",
        "2",
    ]
    train_base.train(train_base.parse_args(common + ["--out", str(tmp_path / "a"), "--steps", "4"]))
    train_base.train(train_base.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "2"]))
    train_base.train(train_base.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "4"]))  # resumes at 2
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    # Same ops in the same order on one thread, RNG and optimizer restored: bit-identical.
    for part in ("unet", "text"):
        for k, v in a["ema"][part].items():
            assert torch.equal(v, b["ema"][part][k]), (part, k)
    logs = [[r.split(",")[:4] for r in (tmp_path / run / "loss.csv").read_text().splitlines()] for run in "ab"]
    assert [r[0] for r in logs[1]] == ["step", "1", "2", "3", "4"]
    assert logs[0] == logs[1]  # step, loss, loss_ema, lr (the timing columns differ)
    exported = tmp_path / "b" / "toy_base_ema.safetensors"
    assert is_toy_checkpoint(exported) and json.loads(read_header(exported)["iqa_toy_training"])["step"] == 4
    load_toy_checkpoint(exported)


def test_toy_vae_works_as_the_pack_guidance_decoder(cfg):
    """Gradient guidance decodes x0 with a copy of vae.first_stage_model: same image as VAEDecode, with grad."""
    import importlib

    copies = importlib.import_module(f"{conftest.PACK_NAME}.guidance.differentiable_copies")
    vae = ToyVAE()
    latent_format = build_model(cfg, seed=0).model.latent_format
    source = copies.vae_decoder(vae, latent_format)
    decode = source.build(torch.device("cpu"))
    z = (torch.rand(1, 192, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    img = decode(z)
    assert torch.equal(img.detach().movedim(1, -1), vae.decode(z.detach()))
    img.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_unet_grid_is_the_image_space_to_depth_by_4(cfg):
    """The UNet's 16x16x48 grid holds neighbouring pixels in neighbouring cells (a coherent s2d-4 image),
    and the exit map is the exact inverse."""
    import torch.nn.functional as F

    unet = build_model(cfg, seed=0).get_model_object("diffusion_model")
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    z = ToyVAE().first_stage_model.encode(img)
    grid = unet._to_grid(z, 8, 4)
    assert torch.equal(grid, F.pixel_unshuffle(img, 4))
    assert torch.equal(unet._to_grid(grid, 4, 8), z)


def test_untrained_toy_unet_is_the_least_squares_eps_estimate(cfg):
    """With its output conv zeroed (the training init) ToyUNet returns c(sigma) * x, the host's own schedule
    giving sigma. c is checked against a least-squares fit of eps on xc for Gaussian x0 of std sigma_data,
    drawn here, within 4 standard errors of the fit (computed from its residuals: 0.1 % of c at high noise,
    4 % at the lowest sigma, where xc is nearly all signal)."""
    patcher = build_model(cfg, seed=0)
    unet, ms = patcher.model.diffusion_model, patcher.model.model_sampling
    g = torch.Generator().manual_seed(0)
    for t in (0, 250, 500, 999):
        sigma = ms.sigmas[t].float()
        x0 = torch.randn(200_000, generator=g) * cfg["sigma_data"]
        eps = torch.randn(200_000, generator=g)
        xc = (x0 + sigma * eps) / (1 + sigma**2).sqrt()
        fit = float((xc * eps).sum() / (xc * xc).sum())
        se = float(((eps - fit * xc) ** 2).mean().sqrt() / (xc * xc).sum().sqrt())
        c = float(unet.skip(torch.tensor([float(t)])))
        assert abs(fit - c) < 4 * se, (t, fit, c, se)
    assert float(unet.skip(torch.tensor([999.0]))) == pytest.approx(1.0, abs=2e-3)
    assert float(unet.skip(torch.tensor([0.0]))) < 0.15, "at low noise the net is not asked to cancel an identity"
    x = torch.randn(2, 192, 8, 8, generator=g)
    t = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        out = unet(x, t, context=torch.zeros(2, cfg["tokens"], cfg["context_dim"]))
    assert torch.allclose(out, unet.skip(t).view(-1, 1, 1, 1) * x, rtol=0, atol=1e-6)


# The shipped base draws its captions' subjects: python -m toy.recognize --seeds 8 measured 86 of 88 samples
# (97.7 %; 11 captions x 8 seeds, 25 Euler steps, cfg 3, no adapter; the astronaut 6/8, every other caption
# 8/8) closest to their own photo. The test samples 3 seeds per caption (33 pictures); the floor allows 4 of
# them to miss (the issue asks for 90 % of the 88), room for another CPU's rounding to flip a few borderline
# matches, while a base that stopped drawing its subjects (a chance match is 1 in 11) is far below it.
RECOGNIZED_FLOOR = 0.85


def test_the_shipped_base_draws_recognizable_subjects():
    from toy import recognize
    from toy.model import load_toy_checkpoint
    from toy.preview import sample

    toy_nodes = __import__("sys").modules[conftest.TOY_NODES_NAME]
    model, clip, vae = load_toy_checkpoint(toy_nodes.DEFAULT_CHECKPOINT)
    images, expected = [], []
    for c in recognize.captions():
        for seed in range(3):
            images.append(sample(model, clip, vae, c, 1, seed, 25, 3.0)[0].numpy())
            expected.append(c)
    frac, matches = recognize.recognized_fraction(images, expected)
    wrong = [(c, m.caption) for c, m in zip(expected, matches) if m.caption != c]
    assert frac >= RECOGNIZED_FLOOR, f"{frac:.0%} recognized; wrong: {wrong}"
