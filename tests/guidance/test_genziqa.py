"""GenzIQA on the real host: tiny SD1.5/SDXL-layout UNets, a tiny host CLIP (the host's own SD1 text
encoder classes at small width) and a random TAESD VAE. Random weights: these test the plumbing."""

from __future__ import annotations

import copy
import importlib
import json
import math

import pytest
import torch
from helpers import EXPECTED_SITES, pack, tiny, tiny_clip

gz = importlib.import_module(pack.__name__ + ".guidance.genziqa")
fresh = importlib.import_module(pack.__name__ + ".guidance.genziqa.fresh")
layer_selection = importlib.import_module(pack.__name__ + ".guidance.genziqa.layer_selection")
more_nodes = importlib.import_module(tiny.__name__.rsplit(".", 1)[0] + ".more_nodes")
Error = pack.adapter.IQAAdapterError
WIDTH = {"sd15": 48, "sdxl": 64}


@pytest.fixture(scope="module")
def sd15():
    return tiny.tiny_model("sd15", seed=1), tiny_clip(WIDTH["sd15"]), more_nodes.tiny_vae()


@pytest.fixture(scope="module")
def sdxl():
    return tiny.tiny_model("sdxl", seed=2), tiny_clip(WIDTH["sdxl"]), more_nodes.tiny_vae()


def make_file(model, clip, family="sd1", **meta):
    meta.setdefault("timesteps", (9, 57))
    meta.setdefault("image_size", 64)
    return fresh.fresh_file(model, clip, family, up_std=0.05, seed=meta.pop("seed", 0), **meta)


def latents(b=2, size=8, seed=0):
    return torch.randn(b, 4, size, size, generator=torch.Generator().manual_seed(seed))


# -- the file -------------------------------------------------------------------------------------------------
def test_file_round_trip_keeps_every_tensor_and_field(sd15, tmp_path):
    model, clip, _ = sd15
    f = make_file(model, clip, calibration=(2.5, -1.0), prompts=("Sharp photo.", "Blurry photo."), noise_seed=7)
    path = gz.save_genziqa(tmp_path / "g.safetensors", f)
    back = gz.load_genziqa(path)
    assert back.meta == f.meta
    assert back.context.keys() == f.context.keys() == {"l"} and back.context["l"].shape == (16, WIDTH["sd15"])
    assert back.lora.keys() == f.lora.keys() and len(f.lora) == 16 * 4 * 3
    for k in f.lora:
        assert torch.equal(back.lora[k], f.lora[k].float()), k
    assert torch.equal(back.context["l"], f.context["l"])
    assert next(k for k in f.lora).startswith("lora_unet_")


def test_lora_part_loads_with_the_hosts_own_lora_loader(sd15, tmp_path):
    import comfy.lora

    model, clip, _ = sd15
    f = make_file(model, clip)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(f.lora, key_map)
    assert len(patches) == 16 * 4
    assert all(".attn2." in k for k in patches)


def _write(path, tensors, header):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=header)
    return path


def test_a_norm_table_in_the_header_gives_percentiles(sd15, tmp_path):
    """A file's norm_table (what genziqa-train writes) round-trips and gives its stats; a malformed one is an
    error naming the field."""
    model, clip, _ = sd15
    table = {
        "format": "iqa-adapter-norm-table/1",
        "metrics": {"genziqa": {"mean": 50.0, "std": 10.0, "min": 20.0, "max": 80.0, "percentiles": {"50": 50.0}}},
    }
    f = make_file(model, clip).with_meta(norm_table=table)
    gz.save_genziqa(tmp_path / "t.safetensors", f)
    back = gz.load_genziqa(tmp_path / "t.safetensors")
    assert back.meta.norm_table == table
    assert back.meta.stats.percentile_from_raw(50.0) == 50.0 and back.meta.stats.percentile_from_raw(65.0) == 75.0
    assert make_file(model, clip).meta.stats is None
    with pytest.raises(Error, match="norm_table"):
        make_file(model, clip).with_meta(norm_table={"metrics": {"other": {}}}).meta.validate("x")


def test_wrong_and_corrupt_files_are_clear_errors(sd15, tmp_path):
    model, clip, _ = sd15
    good = gz.save_genziqa(tmp_path / "ok.safetensors", make_file(model, clip))
    header = gz.load_genziqa(good).meta.to_json()
    ctx = {"genziqa.ctx.l": torch.zeros(16, WIDTH["sd15"])}
    cases = {
        "no header": (ctx, None, "not a GenzIQA file"),
        "bad json": (ctx, {"genziqa": "{nope"}, "not valid JSON"),
        "other format": (ctx, {"genziqa": json.dumps({**header, "format": "x"})}, "not a GenzIQA header"),
        "family": (ctx, {"genziqa": json.dumps({**header, "family": "sd9"})}, "'family' must be one of"),
        "layers": (ctx, {"genziqa": json.dumps({**header, "layers": [["side", 1, 0]]})}, "'layers' must be"),
        "lambda": (ctx, {"genziqa": json.dumps({**header, "pooling_lambda": -1})}, "pooling_lambda"),
        "no context": ({"lora_unet_x.alpha": torch.tensor(4.0)}, {"genziqa": json.dumps(header)}, "no context vectors"),
        "nan": ({"genziqa.ctx.l": torch.full((16, 4), math.nan)}, {"genziqa": json.dumps(header)}, "corrupt"),
        "stray": ({**ctx, "image_proj.proj.weight": torch.zeros(2, 2)}, {"genziqa": json.dumps(header)}, "unexpected"),
    }
    for name, (tensors, head, msg) in cases.items():
        with pytest.raises(Error, match=msg):
            gz.load_genziqa(_write(tmp_path / f"{name}.safetensors", tensors, head))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(Error, match="could not be read"):
        gz.load_genziqa(truncated)
    with pytest.raises(Error, match="must be a .safetensors"):
        gz.load_genziqa(good.rename(tmp_path / "ok.pt"))
    with pytest.raises(Error, match="not found"):
        gz.load_genziqa(tmp_path / "missing.safetensors")


def test_the_authors_checkpoint_converts_to_the_same_scorer(sd15):
    """Their diffusers LoRA keys (save_attn_procs) and prompt-learner 'ctx' give the same scores as the file."""
    convert = importlib.import_module(pack.__name__ + ".guidance.genziqa.convert")
    host = importlib.import_module(pack.__name__ + ".guidance.genziqa.host")
    model, clip, vae = sd15
    f = make_file(model, clip)
    to_diffusers = {v: k for k, v in host.diffusers_lora_targets(model).items()}
    authors = {}
    for key, t in f.lora.items():
        if key.endswith(".lora_up.weight") or key.endswith(".lora_down.weight"):
            base, part = key[len("lora_unet_") :].split(".lora_")
            path = next(p for p in to_diffusers if p.replace(".", "_") == base)
            authors[f"{to_diffusers[path]}_lora.{part.split('.')[0]}.weight"] = t
    attn1 = next(k for k in to_diffusers.values() if ".attn1." in k)
    authors[attn1 + "_lora.up.weight"] = torch.zeros(32, 4)  # their frozen self-attention LoRA
    authors[attn1 + "_lora.down.weight"] = torch.ones(4, 32)
    assert any(k.startswith("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_q") for k in authors)
    prompt_sd = {"ctx": f.context["l"], "token_prefix": torch.zeros(2, 1, 48)}
    g = convert.from_authors(
        model, authors, prompt_sd, family="sd1", encoder="l", timesteps=f.meta.timesteps, image_size=64
    )
    assert g.lora.keys() == f.lora.keys()
    x = latents(2)
    torch.testing.assert_close(
        gz.GenzIQAScorer(model, clip, vae, g).score_latents(x), gz.GenzIQAScorer(model, clip, vae, f).score_latents(x)
    )


# -- layers and families -----------------------------------------------------------------------------------------
def test_layer_selection_resolves_on_sd15_and_sdxl_layouts(sd15, sdxl):
    s15 = layer_selection.model_sites(sd15[0].get_model_object("diffusion_model"))
    sxl = layer_selection.model_sites(sdxl[0].get_model_object("diffusion_model"))
    authors = gz.default_selection("sd2").resolve(s15)
    assert sorted(s.key for s in authors) == sorted(EXPECTED_SITES["sd15"])
    assert [s.key for s in gz.default_selection("sdxl").resolve(sxl)] == EXPECTED_SITES["sdxl"]
    pick = gz.LayerSelection.from_json([["middle", 0, 9], ["input", 4, 1], ["output", 5, 1]], "test")
    assert [s.key for s in pick.resolve(sxl)] == [("middle", 0, 9), ("input", 4, 1), ("output", 5, 1)]
    with pytest.raises(Error, match="does not have: input 1.0"):
        gz.default_selection("sd1").resolve(sxl)
    paths = layer_selection.attn2_module_paths(sdxl[0].get_model_object("diffusion_model"))
    assert set(paths) == set(EXPECTED_SITES["sdxl"])
    assert paths[("middle", 0, 3)] == "middle_block.1.transformer_blocks.3.attn2"


def test_a_file_for_another_family_is_refused(sd15, sdxl):
    f15 = make_file(*sd15[:2])
    with pytest.raises(Error, match=r"made for SD1.x \(16 cross-attention layers.*MODEL is a UNet \(70"):
        gz.GenzIQAScorer(sdxl[0], sdxl[1], sdxl[2], f15)
    wrong_width = f15.with_meta(family="sd2", context_dim=1024)
    with pytest.raises(Error, match="made for SD2.x"):
        gz.GenzIQAScorer(*sd15, wrong_width)
    fxl = make_file(*sdxl[:2], family="sdxl")
    with pytest.raises(Error, match="made for SDXL"):
        gz.GenzIQAScorer(*sd15, fxl)


def test_sdxl_layout_scores(sdxl):
    f = make_file(*sdxl[:2], family="sdxl", timesteps=(21,))
    s = gz.GenzIQAScorer(*sdxl, f).score_latents(latents(2))
    assert s.shape == (2,) and torch.isfinite(s).all()


def test_context_vectors_enter_right_after_the_start_token(sd15):
    host = importlib.import_module(pack.__name__ + ".guidance.genziqa.host")
    clip = sd15[1]
    ctx = torch.randn(16, WIDTH["sd15"], generator=torch.Generator().manual_seed(0))
    changed = ctx.clone()
    changed[5] = torch.randn(
        WIDTH["sd15"], generator=torch.Generator().manual_seed(1)
    )  # not a constant shift: LayerNorm removes those
    a, _ = host.encode_with_context(clip, "Good Photo.", {"l": ctx})
    b, _ = host.encode_with_context(clip, "Good Photo.", {"l": changed})
    assert a.shape == (1, 77, WIDTH["sd15"])
    # causal text encoder: the start token and context vectors 0..4 (positions 0..5) cannot see vector 5
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert (a[:, 6] - b[:, 6]).abs().max() > 1e-4
    plain = clip.encode_from_tokens(clip.tokenize("Good Photo."))
    assert not torch.allclose(plain[:, 1], a[:, 1])
    with pytest.raises(Error, match="too long"):
        host.encode_with_context(clip, " ".join(["word"] * 70), {"l": ctx})


# -- the score ------------------------------------------------------------------------------------------------
def _direct_pool(q, k, heads, lam):
    """Written from the method: per head, s = q k^T / sqrt(d); (1/lam) log sum over positions exp(lam s)."""
    b, n, inner = q.shape
    d = inner // heads
    out = torch.zeros(b)
    for row in range(b):
        vals = []
        for h in range(heads):
            qh, kh = q[row, :, h * d : (h + 1) * d].double(), k[row, :, h * d : (h + 1) * d].double()
            s = qh @ kh.T / math.sqrt(d)  # [N, T]
            m = s.max(dim=0).values
            vals.append(m + torch.log(torch.exp(lam * (s - m)).sum(dim=0)) / lam)
        out[row] = torch.stack(vals).mean()
    return out


def test_pooled_logits_match_a_direct_computation_from_q_and_k(sd15):
    model, clip, vae = sd15
    f = make_file(model, clip, layers=gz.LayerSelection((("input", 4, 0),)), timesteps=(45,), noise_term=False)
    scorer = gz.GenzIQAScorer(model, clip, vae, f)
    unet = model.get_model_object("diffusion_model")
    attn2 = dict(unet.named_modules())[layer_selection.attn2_module_paths(unet)[("input", 4, 0)]]
    seen = {}
    hooks = [
        getattr(attn2, p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o.detach().clone()))
        for p in ("to_q", "to_k")
    ]
    try:
        parts = scorer.evaluate(latents(2))
    finally:
        for h in hooks:
            h.remove()
    heads = attn2.heads
    direct = _direct_pool(seen["to_q"], seen["to_k"], heads, 0.14)  # rows: 2 images x good, then x bad
    assert seen["to_q"].shape[0] == 4
    expected = (direct[:2] + direct[2:]) / 2
    torch.testing.assert_close(parts["attention"], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(direct[:2], direct[2:])  # the prompts differ
    lam_other = _direct_pool(seen["to_q"], seen["to_k"], heads, 1.0)
    assert not torch.allclose(lam_other, direct)  # lambda matters
    diff = gz.GenzIQAScorer(model, clip, vae, f.with_meta(attention_term="good_minus_bad")).evaluate(latents(2))
    torch.testing.assert_close(diff["attention"], direct[:2] - direct[2:], rtol=1e-4, atol=1e-5)


def test_score_is_deterministic_and_depends_on_lora_context_and_calibration(sd15):
    model, clip, vae = sd15
    f = make_file(model, clip)
    x = latents(3)
    a = gz.GenzIQAScorer(model, clip, vae, f).evaluate(x)
    b = gz.GenzIQAScorer(model, clip, vae, f).evaluate(x)
    assert torch.equal(a["score"], b["score"]) and a["score"].shape == (3,)
    assert torch.isfinite(a["noise"]).all() and (a["noise"] != 0).all()
    torch.testing.assert_close(a["raw"], a["attention"] + a["noise"])
    no_lora = gz.GenzIQAScorer(model, clip, vae, fresh.fresh_file(model, clip, "sd1", up_std=0.0, timesteps=(9, 57)))
    assert not torch.allclose(no_lora.score_latents(x), a["score"])
    other_ctx = make_file(model, clip, seed=5)
    other_ctx.lora.update(f.lora)
    assert not torch.allclose(gz.GenzIQAScorer(model, clip, vae, other_ctx).score_latents(x), a["score"])
    cal = gz.GenzIQAScorer(model, clip, vae, f.with_meta(calibration=(2.0, 1.0))).score_latents(x)
    torch.testing.assert_close(cal, 2.0 * a["raw"] + 1.0)


def _output(model, x):
    import comfy.model_management as mm

    mm.load_models_gpu([model])
    ctx = torch.randn(1, 77, WIDTH["sd15"], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return model.model.apply_model(
            x,
            torch.tensor([2.0]),
            c_crossattn=ctx,
            transformer_options=model.model_options.get("transformer_options", {}),
        )


def test_the_model_given_is_not_mutated(sd15):
    model, clip, vae = sd15
    x = latents(1)
    before = _output(model, x)
    options, patches = copy.deepcopy(model.model_options), dict(model.patches)
    gz.GenzIQAScorer(model, clip, vae, make_file(model, clip)).score_latents(latents(2))
    assert model.model_options == options and model.patches == patches
    torch.testing.assert_close(_output(model, x), before, rtol=0, atol=0)


def test_a_replace_patch_already_on_a_layer_is_called_not_dropped(sd15):
    model, clip, vae = sd15
    calls = []

    def foreign(q, k, v, extra):
        calls.append(extra["block"])
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra["n_heads"])

    m = model.clone()
    m.set_model_attn2_replace(foreign, "output", 7, 0)
    gz.GenzIQAScorer(m, clip, vae, make_file(model, clip, timesteps=(9,))).score_latents(latents(1))
    assert calls == [("output", 7)]


def test_score_images_through_the_vae(sd15):
    model, clip, vae = sd15
    images = torch.rand(2, 72, 80, 3, generator=torch.Generator().manual_seed(1))
    f = make_file(model, clip)
    s = gz.GenzIQAScorer(model, clip, vae, f)
    out = s.score_images(images)
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert torch.equal(out, s.score_images(images))
    assert s.prepare_pixels(images).shape == (2, 64, 64, 3)
    unit = gz.GenzIQAScorer(model, clip, vae, f.with_meta(pixel_norm="unit"))
    assert not torch.allclose(unit.score_images(images), out)
    native = gz.GenzIQAScorer(model, clip, vae, f.with_meta(image_size=None))
    assert native.prepare_pixels(images).shape == (2, 72, 80, 3)


def test_bad_inputs_are_clear_errors(sd15):
    model, clip, vae = sd15
    s = gz.GenzIQAScorer(model, clip, vae, make_file(model, clip))
    with pytest.raises(Error, match="smaller than the VAE's latent stride"):
        s.score_images(torch.rand(1, 6, 64, 3))
    with pytest.raises(Error, match=r"IMAGE batches \[B, H, W, 3\]"):
        s.score_images(torch.rand(64, 64, 3))
    with pytest.raises(Error, match="latents"):
        s.score_latents(torch.randn(1, 3, 8, 8))
    with pytest.raises(Error, match="file was made for another text encoder"):
        gz.GenzIQAScorer(model, tiny_clip(32), vae, make_file(model, clip))


def test_gradients_flow_to_the_latent(sd15):
    model, clip, vae = sd15
    s = gz.GenzIQAScorer(model, clip, vae, make_file(model, clip, timesteps=(33,)))
    with torch.inference_mode(False):
        x = latents(2).requires_grad_(True)
        score = s.score_latents(x, grad=True)
        score.sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # directional derivative against a central difference (the score is deterministic)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    d = d / d.norm()
    h = 1e-2
    with torch.no_grad():
        fd = (s.score_latents(x.detach() + h * d).sum() - s.score_latents(x.detach() - h * d).sum()) / (2 * h)
    torch.testing.assert_close((g * d).sum(), fd, rtol=0.05, atol=1e-3)


# -- the loader node and IQA Score ------------------------------------------------------------------------------
def test_load_genziqa_node_feeds_iqa_score_and_is_not_a_decoded_image_metric(sd15, workspace):
    model, clip, vae = sd15
    folder = workspace / "models" / "genziqa"
    gz.save_genziqa(folder / "tiny_sd1.safetensors", make_file(model, clip))
    gz.save_genziqa(folder / "tiny_sdxl.safetensors", make_file(*sd15[:2]).with_meta(family="sdxl", context_dim=64))
    nodes = pack.NODE_CLASS_MAPPINGS
    assert "tiny_sd1.safetensors" in nodes["IQALoadGenzIQA"].INPUT_TYPES()["required"]["genziqa_name"][0]
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():  # as the host runs a prompt
        (iqa,) = nodes["IQALoadGenzIQA"]().load(model, clip, vae, "tiny_sd1.safetensors")
        out = nodes["IQAScore"]().score(images, iqa, batch_size=1)
        # one image per call, as the node was asked to (batch_size=1): the same computation, so the same bits
        # (a batch of 2 may sum in another order on another CPU: 1e-7 apart on one machine here)
        direct = [float(iqa.scorer.score_images(images[i : i + 1])[0]) for i in range(len(images))]
    scores = out["result"][0]
    assert iqa.name == "genziqa:tiny_sd1" and len(scores) == 2
    assert scores == direct
    assert all(math.isnan(v) for v in out["result"][1])  # this file has no percentile table
    lo, hi = sorted(scores)
    table = {"format": "iqa-adapter-norm-table/1", "metrics": {"genziqa": {"mean": (lo + hi) / 2, "std": 1.0,
             "min": lo, "max": hi, "percentiles": {"50": (lo + hi) / 2}}}}  # fmt: skip
    gz.save_genziqa(folder / "tiny_table.safetensors", make_file(model, clip).with_meta(norm_table=table))
    with torch.inference_mode():
        (with_table,) = nodes["IQALoadGenzIQA"]().load(model, clip, vae, "tiny_table.safetensors")
        pct = nodes["IQAScore"]().score(images, with_table, batch_size=1)["result"][1]
    assert sorted(pct) == [0.0, 100.0], pct  # percentiles in the file's own table
    guidance = importlib.import_module(pack.__name__ + ".nodes.gradient_guidance")
    with pytest.raises(Error, match="cannot be mixed with decoded-image metrics"):
        guidance.score_term(iqa, 1.0, "maximize")
    with pytest.raises(Error, match="made for SDXL"):
        nodes["IQALoadGenzIQA"]().load(model, clip, vae, "tiny_sdxl.safetensors")
    with pytest.raises(Error, match="not found in the 'genziqa' folder"):
        nodes["IQALoadGenzIQA"]().load(model, clip, vae, "missing.safetensors")


def test_gradients_on_inference_mode_weights_are_a_clear_error(sd15):
    model = tiny.tiny_model("sd15", seed=1)
    clip, vae = sd15[1], sd15[2]
    with torch.inference_mode():  # as a checkpoint loaded inside a prompt
        for p in model.model.diffusion_model.parameters():
            p.data = p.data.clone()
    assert next(model.model.diffusion_model.parameters()).is_inference()
    s = gz.GenzIQAScorer(model, clip, vae, make_file(model, clip, timesteps=(9,)))
    assert torch.isfinite(s.score_latents(latents(1))).all()  # scoring without gradients still works
    with pytest.raises(Error, match="not inference tensors"):
        s.score_latents(latents(1).requires_grad_(True), grad=True)


# -- guidance on the latent ------------------------------------------------------------------------------------
def _as_loaded_in_a_prompt(model):
    """The model with its UNet weights as inference tensors, as a loader node inside a prompt leaves them."""
    with torch.inference_mode():
        for module in model.get_model_object("diffusion_model").modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
    return model


def _sample(model, seed: int = 3) -> torch.Tensor:
    from comfy.nodes import base_nodes

    g = torch.Generator().manual_seed(1)
    pos, neg = [[torch.randn(1, 6, 48, generator=g), {}]], [[torch.randn(1, 6, 48, generator=g), {}]]
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    with torch.inference_mode():
        return base_nodes.common_ksampler(model, seed, 3, 4.0, "euler", "normal", pos, neg, latent)[0]["samples"]


def _guide(model, iqa, vae, **kw):
    node = pack.NODE_CLASS_MAPPINGS["IQAGradientGuidance"]()
    args = dict(scale=0.5, start_percent=0.0, end_percent=1.0, every_n_steps=1, direction="maximize", target_z=2.0)
    args.update(kw)
    with torch.inference_mode():
        return node.apply(model, iqa, vae, max_decode_size=64, **args)[0]


def test_genziqa_guides_sampling_from_the_latent_inside_inference_mode(sd15):
    """A model loaded inside a prompt (inference-tensor weights) is guided by GenzIQA's latent gradient, with no
    decode: the result scores higher than the unguided one, and the shared UNet's weights are untouched."""
    _, clip, vae = sd15
    model = _as_loaded_in_a_prompt(tiny.tiny_model("sd15", seed=1))
    iqa_model = importlib.import_module(pack.__name__ + ".guidance.genziqa.iqa_model")
    with torch.inference_mode():
        iqa = iqa_model.GenzIQAModel(gz.GenzIQAScorer(model, clip, vae, make_file(model, clip)), "genziqa:t")
    unet = model.get_model_object("diffusion_model")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    guided = _guide(model, iqa, vae)
    hook = guided.model_options["sampler_post_cfg_function"][0]
    assert hook.decoder.upscale_ratio == 1 and "no decode" in hook.decoder.name
    plain, steered = _sample(model), _sample(guided)
    assert hook.state.guided == 3 and not hook.state.copies  # every step guided; the run's copy dropped at its end
    assert not torch.allclose(plain, steered)
    after = unet.state_dict()  # before scoring below, which loads the scorer's own LoRA patches, as IQA Score does
    assert all(torch.equal(before[k], after[k]) for k in before), "guidance changed the shared UNet's weights"
    with torch.inference_mode():
        lift = iqa.scorer.score_latents(model.model.process_latent_in(steered)) - iqa.scorer.score_latents(
            model.model.process_latent_in(plain)
        )
    # measured 0.042 and 0.036 on scores near 18.7; another CPU's float32 rounding moves such scores by about
    # 1e-5 (a few ulps through two tiny UNet calls), so the sign cannot flip
    assert (lift > 0).all(), lift
    assert "sampler_post_cfg_function" not in model.model_options  # the node cloned the model


def test_genziqa_guidance_bad_combinations_are_clear_errors(sd15):
    model, clip, vae = sd15
    iqa_model = importlib.import_module(pack.__name__ + ".guidance.genziqa.iqa_model")
    iqa = iqa_model.GenzIQAModel(gz.GenzIQAScorer(model, clip, vae, make_file(model, clip)), "genziqa:t")
    with pytest.raises(Error, match="cannot be combined with other metrics"):
        _guide(model, iqa, vae, iqa_model_2=iqa)
    with pytest.raises(Error, match="no norm_table"):
        _guide(model, iqa, vae, direction="target z-score")
