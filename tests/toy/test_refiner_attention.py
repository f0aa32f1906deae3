"""The toy refiner's cross-attention: a fifth attn2 site at the full image that the pack finds, patches and
masks like the UNet's own, added to a trained base without changing what it draws, and grown into an adapter
file made before it (training --init-adapter)."""

from __future__ import annotations

import json

import conftest  # noqa: F401  (starts the host; toy/ is imported from the repo root)
import pytest
import torch
from helpers import pack, run_unet, tiny
from safetensors.torch import save_file

from toy.model import build_model, build_text, default_config, save_toy_checkpoint
from toy.sources import SOURCES
from toy.text import build_vocab
from toy.train_base import _load_init

VOCAB = build_vocab(sorted({s.caption for s in SOURCES}))
META = {"metrics": ["topiq_nr"], "use_flag": True, "pos_encode_L": 0}


def _sites(patcher):
    return pack.adapter.layers.find_attn2_sites(patcher.get_model_object("diffusion_model"))


def _adapter_file(path, patcher, only_last: bool, seed: int = 0):
    """A random 2-token linear adapter fitting the model (tiny_models.adapter_state); only_last zeroes every
    layer but the refiner's."""
    sites = _sites(patcher)
    sd = tiny.adapter_state(None, 2, seed=seed, hiddens=[s.hidden for s in sites], cross=sites[0].context_dim)
    for n in range(len(sites) - 1 if only_last else 0):
        for kv in "kv":
            sd[f"ip_adapter.{2 * n + 1}.to_{kv}_ip.weight"].zero_()
    save_file(sd, str(path), metadata={"iqa_adapter": json.dumps(META)})
    return pack.adapter.IQAAdapter.load(path)


def _wake_refiner(patcher, seed: int = 1, attention: bool = True):
    """A trained refiner is not a no-op: give its zero-initialised output convs (its last, and its attention
    block's) weights."""
    refine = patcher.get_model_object("diffusion_model").refine
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in [refine[4]] + ([refine.attend.drop] if attention else []):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)


def _run(patcher, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(1, 192, 8, 8, generator=g), torch.randn(1, 8, 64, generator=g)
    return run_unet(patcher, x, ctx, sigma=0.1)


def test_the_refiner_is_the_fifth_site_at_the_full_image():
    sites = _sites(build_model(default_config(VOCAB), seed=0))
    assert [(s.key, s.hidden, s.context_dim) for s in sites] == [
        (("input", 3, 0), 64, 64),
        (("output", 2, 0), 64, 64),
        (("output", 3, 0), 64, 64),
        (("middle", 0, 0), 64, 64),
        (("output", 4, 0), 32, 64),
    ]
    assert len(_sites(build_model(default_config(VOCAB, refine_attention=0), seed=0))) == 4


def test_adding_the_attention_to_a_trained_base_changes_nothing():
    """train_base --init --refine-attention: the new block starts as an exact no-op (zeroed output conv)."""
    old = build_model(default_config(VOCAB, refine_attention=0), seed=5)
    _wake_refiner(old, attention=False)
    new = build_model(default_config(VOCAB), seed=0)
    _load_init(new.get_model_object("diffusion_model"), old.get_model_object("diffusion_model").state_dict(), "x")
    assert torch.equal(_run(old), _run(new))
    attend = new.get_model_object("diffusion_model").refine.attend.drop
    with torch.no_grad():
        attend.weight.normal_(0, 0.3)
    assert not torch.equal(_run(old), _run(new)), "the block must act once trained"


def test_quality_condition_patches_the_refiner_site(tmp_path):
    """An adapter whose only nonzero layer is the refiner's changes the output; the model given is untouched."""
    model = build_model(default_config(VOCAB), seed=0)
    _wake_refiner(model)
    adapter = _adapter_file(tmp_path / "last.safetensors", model, only_last=True)
    qc = pack.nodes.quality_condition.QualityCondition()
    before = _run(model)
    patched = qc.apply(model, adapter, "2", "z-score", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
    assert not torch.equal(_run(patched), before)
    assert torch.equal(_run(model), before)
    half = torch.zeros(1, 64, 64)
    half[:, :, :32] = 1.0
    masked = qc.apply(model, adapter, "2", "z-score", 1.0, 0.0, 1.0, "zeros", 0.5, mask=half)[0]
    diff = (_run(masked) - before).abs()
    pix = torch.nn.functional.pixel_shuffle(diff, 8)[0].amax(0)  # [64, 64] image-space change
    assert pix[:, 36:].max() == 0, "the masked half is untouched beyond the refiner's 3x3 reach"
    assert pix[:, :28].max() > 0


def test_an_adapter_from_before_the_refiner_grows_into_it(tmp_path):
    """--init-adapter with a 4-layer file on the 5-site base: its layers load, the fifth starts as a copy of
    the refiner's to_k/to_v (as a new adapter's layers do); a file short of UNet layers is still refused."""
    from training.common.errors import TrainingError
    from training.iqa_adapter.trainable import TrainableAdapter

    old, new = build_model(default_config(VOCAB, refine_attention=0), seed=0), build_model(default_config(VOCAB), 0)
    path = tmp_path / "four.safetensors"
    _adapter_file(path, old, only_last=False, seed=3)
    layers = pack.adapter.layers.find_attn2_layers(new.get_model_object("diffusion_model"))
    grown = TrainableAdapter.from_file(path, layers, extra=1)
    flat = grown.flat_state()
    from safetensors.torch import load_file

    file = load_file(str(path))
    for k, v in file.items():
        assert torch.equal(flat[k], v), k
    assert torch.equal(flat["ip_adapter.9.to_k_ip.weight"], layers[4][1].to_k.weight)
    with pytest.raises(TrainingError, match="four.safetensors"):
        TrainableAdapter.from_file(path, layers, extra=0)


def test_toy_checkpoints_keep_the_refiner_attention(tmp_path):
    from toy.model import load_toy_checkpoint

    cfg = default_config(VOCAB)
    model = build_model(cfg, seed=0)
    _wake_refiner(model)
    path = save_toy_checkpoint(tmp_path / "t.safetensors", model, build_text(cfg), dtype=None)
    loaded = load_toy_checkpoint(path)[0]
    assert torch.equal(_run(loaded), _run(model))


def test_train_base_adds_the_attention_and_trains_the_refiner_alone(tmp_path):
    """train_base --init OLD --refine-attention 32 --train refiner: the new block is in the export, the
    refiner moved, and every other weight (UNet, text table) is bit-for-bit the old file's."""
    from toy import patches, train_base
    from toy.model import load_toy_checkpoint

    cfg = default_config(VOCAB, refine_attention=0)
    old = build_model(cfg, seed=2)
    _wake_refiner(old, attention=False)
    start = save_toy_checkpoint(tmp_path / "old.safetensors", old, build_text(cfg, seed=2), dtype=None)
    data = tmp_path / "patches"
    patches.write_patches(data, 4, seed=2)
    args = ["--data", str(data), "--out", str(tmp_path / "ft"), "--init", str(start), "--batch", "2"]
    args += ["--steps", "2", "--warmup", "1", "--lr", "1e-2", "--ema", "0", "--save-every", "2", "--log-every", "1"]
    train_base.train(train_base.parse_args(args + ["--refine-attention", "32", "--train", "refiner"]))
    new, clip, _ = load_toy_checkpoint(tmp_path / "ft" / "toy_base_ema.safetensors")
    a = old.get_model_object("diffusion_model").state_dict()
    b = new.get_model_object("diffusion_model").state_dict()
    assert any(k.startswith("refine.attend.") for k in b)
    moved = {k for k in a if not torch.equal(a[k].half().float(), b[k])}  # the export is fp16
    assert moved and all(k.startswith("refine.") for k in moved), sorted(moved)[:4]
    old_text = build_text(cfg, seed=2).state_dict()
    assert all(torch.equal(v.half().float(), clip.table.state_dict()[k]) for k, v in old_text.items())


def test_genziqa_reads_the_unet_blocks_only():
    """GenzIQA's layout is the UNet's blocks: with or without the refiner's site the toy is the "toy" family
    and "all" selects the same four layers (their LoRA keys are host block paths)."""
    selection = pack.guidance.genziqa.layer_selection
    for refine_attention in (0, 32):
        unet = build_model(default_config(VOCAB, refine_attention=refine_attention), seed=0).model.diffusion_model
        sites = selection.model_sites(unet)
        assert selection.model_family(sites) == "toy"
        assert sorted(s.key for s in sites) == sorted(selection.attn2_module_paths(unet))
