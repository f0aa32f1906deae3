"""Fidelity of the pack's decoupled attention against diffusers' own IP-Adapter, an independent implementation.

One set of random UNet weights lives in two implementations: a tiny diffusers UNet2DConditionModel with the
SD1.5 or SDXL block layout, and the real host's UNet built from the same layout (its keys converted with the
host's own diffusers key map, comfy.utils.unet_to_diffusers). One random IQA-Adapter in the official
IP-Adapter key layout is loaded into diffusers through its native IP-Adapter loader, and into the host
through the pack's Load path and its Quality Condition node. The noise predictions must agree.

What this pins down, independently of the pack's code:
  * checkpoint layer order: diffusers numbers its attention processors itself (down, up, mid);
  * the projection: diffusers' ImageProjection (Linear, reshape, LayerNorm) on the same input vector;
  * the attention term and its scale: diffusers' IPAdapterAttnProcessor2_0 (PyTorch SDPA);
  * CFG batching: the host batches uncond first (cond_or_uncond == [1, 0]); diffusers is given [cond, uncond].
The host runs through its own conditioning path (convert_cond, process_conds, calc_cond_batch, apply_model
with EPS input scaling), under both host attention backends.

diffusers hard-codes 4 tokens for the linear ("proj.weight") projection, so the adapters here have 4 tokens.
The tiny UNets have no addition embeddings (no SDXL `y`): the attention path is the subject here.
"""

from __future__ import annotations

import conftest
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers==0.39.0 is in requirements/dev.txt (scripts/dev.sh)")

import comfy.sampler_helpers  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.utils  # noqa: E402
from comfy.ldm.modules import attention as host_attention  # noqa: E402

pack = conftest.pack
tiny = conftest.fixtures.tiny_models
QualityCondition = pack.nodes.quality_condition.QualityCondition

METRICS = ["topiq_nr", "laion_aes"]
META = {"metrics": METRICS, "use_flag": True, "pos_encode_L": 0}  # input_dim 3: [z_topiq, z_laion, 1.0]
NUM_TOKENS = 4
# Target z-scores per latent; with use_flag and no positional encoding the encoded vector is [z..., 1.0].
TARGETS = {1: [[1.5, -0.7]], 2: [[2.0, 0.3], [-1.2, 0.9]]}
NEG_STRENGTH = 0.5
REL_TOL = 2e-5  # max |host - diffusers| / max |diffusers|, float32; observed 6e-8 (SDPA) to 3e-6 (sub-quad)
# with torch's AVX-512, AVX2 and default kernels, oneDNN and MKL at AVX2 alike. Normalized by the largest
# value, not elementwise, so elements near zero do not decide it.

BACKENDS = {"sub_quad": host_attention.attention_sub_quad, "pytorch": host_attention.attention_pytorch}

LATENT = {"sd15": 16, "sdxl": 8}


def diffusers_layout(host_cfg: dict) -> dict:
    """The diffusers UNet2DConditionModel arguments of the same block layout as a host UNet config.

    One level per channel_mult entry, with cross-attention where its first input block has it. Traps: here
    diffusers' attention_head_dim is the number of heads, not their width; its mid block takes the depth
    of the last level, so a level without attention is given the middle block's depth.
    """
    res = host_cfg["num_res_blocks"]
    starts = [sum(res[:level]) for level in range(len(res))]
    depths = [host_cfg["transformer_depth"][i] for i in starts]
    down = tuple("CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths)
    channels = tuple(host_cfg["model_channels"] * m for m in host_cfg["channel_mult"])
    return dict(
        down_block_types=down,
        up_block_types=tuple(t.replace("Down", "Up") for t in reversed(down)),
        block_out_channels=channels,
        attention_head_dim=tuple(c // host_cfg["num_head_channels"] for c in channels),
        transformer_layers_per_block=tuple(d or host_cfg["transformer_depth_middle"] for d in depths),
        use_linear_projection=host_cfg["use_linear_in_transformer"],
    )


class Pair:
    """The same random UNet in diffusers and in the host, and one adapter loaded into both."""

    def __init__(self, layout: str, adapter_dir, seed: int = 0):
        self.layout = layout
        host_cfg = tiny.unet_config(layout)
        cfg = diffusers_layout(host_cfg)
        self.latent = LATENT[layout]
        self.context_dim = host_cfg["context_dim"]
        with torch.inference_mode(False):
            unet = diffusers.UNet2DConditionModel(
                sample_size=self.latent,
                in_channels=4,
                out_channels=4,
                layers_per_block=2,
                cross_attention_dim=self.context_dim,
                norm_num_groups=32,
                **cfg,
            )
            tiny.fill_(unet, seed)
        self.unet = unet.eval().requires_grad_(False)

        # Host model with the very same weights, keys mapped by the host's own converter.
        self.model = tiny.tiny_model(layout, seed=seed + 1)  # different fill: every weight must be overwritten
        key_map = comfy.utils.unet_to_diffusers(host_cfg)  # diffusers key -> host key
        d_sd = self.unet.state_dict()
        host_unet = self.model.get_model_object("diffusion_model")
        h_keys = set(host_unet.state_dict())
        assert set(d_sd) <= set(key_map), f"unmapped diffusers keys: {sorted(set(d_sd) - set(key_map))[:5]}"
        mapped = {key_map[k]: v for k, v in d_sd.items()}
        assert set(mapped) == h_keys, f"host keys not covered: {sorted(h_keys - set(mapped))[:5]}"
        with torch.inference_mode(False), torch.no_grad():
            host_unet.load_state_dict(mapped, strict=True)

        # One random adapter in the official layout; diffusers gets the very same tensors.
        self.path = tiny.write_adapter(
            adapter_dir / f"fidelity_{layout}_{seed}.safetensors", layout, META, num_tokens=NUM_TOKENS, seed=seed + 7
        )
        from safetensors.torch import load_file

        flat = load_file(str(self.path))
        self.flat = flat
        self.adapter = pack.adapter.IQAAdapter.load(self.path)
        self.ip_state = {
            "image_proj": {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("image_proj.")},
            "ip_adapter": {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("ip_adapter.")},
        }
        self.ip_unet = self._ip_unet(self.ip_state)
        g = torch.Generator().manual_seed(seed + 11)
        self.ctx_pos = torch.randn(1, 7, self.context_dim, generator=g)
        self.ctx_neg = torch.randn(1, 7, self.context_dim, generator=g)
        self.noise = torch.randn(2, 4, self.latent, self.latent, generator=g)

    def _ip_unet(self, ip_state):
        """A copy of the diffusers UNet with the adapter loaded through diffusers' native IP-Adapter path."""
        import copy

        with torch.inference_mode(False):
            unet = copy.deepcopy(self.unet)
            unet._load_ip_adapter_weights([ip_state], low_cpu_mem_usage=False)
        return unet.eval().requires_grad_(False)

    # --- the host -----------------------------------------------------------------------------------------
    def host_eps(self, model, x, sigma: float, with_uncond: bool) -> list[torch.Tensor]:
        """Noise predictions [cond, (uncond)] through the host's own conditioning and batching path."""
        b = x.shape[0]
        conds = {"positive": comfy.sampler_helpers.convert_cond([[self.ctx_pos, {}]])}
        if with_uncond:
            conds["negative"] = comfy.sampler_helpers.convert_cond([[self.ctx_neg, {}]])
        base = model.model
        with torch.inference_mode():
            conds = comfy.samplers.process_conds(base, x, conds, torch.device("cpu"))
            sig = torch.full((b,), sigma)
            out = comfy.samplers.calc_cond_batch(
                base, [conds["positive"], conds.get("negative")], x, sig, model.model_options
            )
        # EPS model: denoised = x - eps * sigma.
        return [(x - d) / sigma for d in out[: 2 if with_uncond else 1]]

    def timestep(self, sigma: float) -> float:
        ms = self.model.get_model_object("model_sampling")
        return float(ms.timestep(torch.tensor([sigma])))

    # --- diffusers ----------------------------------------------------------------------------------------
    def diffusers_eps(self, unet, x, sigma, ctx, embeds=None, scale=1.0):
        """diffusers' noise prediction on the host's scaled input (c_in = 1/sqrt(sigma^2+1)), same timestep."""
        b = x.shape[0]
        t = torch.full((b,), self.timestep(sigma))
        kw = {}
        if embeds is not None:
            for proc in unet.attn_processors.values():
                if hasattr(proc, "to_k_ip"):
                    proc.scale = [scale]
            kw["added_cond_kwargs"] = {"image_embeds": [embeds[:, None, :]]}
        with torch.no_grad():
            return unet(x / (sigma**2 + 1) ** 0.5, t, encoder_hidden_states=ctx.expand(b, -1, -1), **kw).sample


def encoded(z_rows) -> torch.Tensor:
    """The encoded input vectors, written out here: [z_topiq, z_laion, 1.0] (use_flag, no positional code)."""
    z = torch.tensor(z_rows, dtype=torch.float32)
    return torch.cat([z, torch.ones(len(z), 1)], dim=1)


def targets_text(z_rows) -> str:
    return "; ".join(", ".join(f"{m}={v}" for m, v in zip(METRICS, row)) for row in z_rows)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def pair(request, adapter_dir):
    return Pair(request.param, adapter_dir)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch):
    """Both host attention backends: the host's layers and the pack's patch read optimized_attention at call time."""
    monkeypatch.setattr(host_attention, "optimized_attention", BACKENDS[request.param])
    return request.param


SIGMA = 2.5


def test_host_and_diffusers_unets_agree_without_adapter(pair, backend):
    """The shared ground: both implementations give the same base noise prediction."""
    x = pair.noise[:1]
    host = pair.host_eps(pair.model, x, SIGMA, with_uncond=False)[0]
    ref = pair.diffusers_eps(pair.unet, x, SIGMA, pair.ctx_pos)
    assert rel_err(host, ref) < REL_TOL


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_cond_only_matches_diffusers_ip_adapter(pair, backend, scale):
    z = TARGETS[1]
    x = pair.noise[:1]
    patched = QualityCondition().apply(
        pair.model, pair.adapter, targets_text(z), "z-score", scale, 0.0, 1.0, "zeros", NEG_STRENGTH
    )[0]
    host = pair.host_eps(patched, x, SIGMA, with_uncond=False)[0]
    ref = pair.diffusers_eps(pair.ip_unet, x, SIGMA, pair.ctx_pos, encoded(z), scale)
    base = pair.diffusers_eps(pair.unet, x, SIGMA, pair.ctx_pos)
    err, effect = rel_err(host, ref), rel_err(ref, base)
    assert effect > 1000 * REL_TOL, f"the adapter term barely moves the output ({effect:.2e}): comparison is vacuous"
    assert err < REL_TOL, (
        f"{pair.layout}/{backend} scale {scale}: host vs diffusers {err:.2e} (adapter effect {effect:.2e})"
    )


@pytest.mark.parametrize("uncond", ["zeros", "negative quality"])
@pytest.mark.parametrize("batch", [1, 2])
def test_cfg_batch_matches_diffusers_ip_adapter(pair, backend, batch, uncond):
    """cond + uncond in one host batch (uncond first), one target per latent; diffusers gets [cond..., uncond...]."""
    z = TARGETS[batch]
    x = pair.noise[:batch]
    scale = 0.8
    patched = QualityCondition().apply(
        pair.model, pair.adapter, targets_text(z), "z-score", scale, 0.0, 1.0, uncond, NEG_STRENGTH
    )[0]
    cond, unc = pair.host_eps(patched, x, SIGMA, with_uncond=True)
    vec = encoded(z)
    neg = torch.zeros_like(vec) if uncond == "zeros" else -NEG_STRENGTH * vec
    ctx = torch.cat([pair.ctx_pos.expand(batch, -1, -1), pair.ctx_neg.expand(batch, -1, -1)])
    ref = pair.diffusers_eps(pair.ip_unet, torch.cat([x, x]), SIGMA, ctx, torch.cat([vec, neg]), scale)
    ref_cond, ref_unc = ref[:batch], ref[batch:]
    base_unc = pair.diffusers_eps(pair.unet, x, SIGMA, pair.ctx_neg.expand(batch, -1, -1))
    assert rel_err(ref_unc, base_unc) > 1000 * REL_TOL, "the uncond adapter term must not vanish (LayerNorm bias)"
    assert rel_err(cond, ref_cond) < REL_TOL, f"cond: {rel_err(cond, ref_cond):.2e}"
    assert rel_err(unc, ref_unc) < REL_TOL, f"uncond: {rel_err(unc, ref_unc):.2e}"


@pytest.mark.parametrize("fault", ["swapped layers", "middle block left out"])
def test_comparison_detects_a_wrong_layer_mapping(pair, fault):
    """Sensitivity: diffusers fed a subtly wrong adapter no longer matches the pack, so a mapping bug would show.

    "swapped layers" exchanges the first down-block layer with the last mid-block layer of the same width;
    "middle block left out" zeroes the mid-block layers (the ("middle", 1) bug of other packs).
    """
    shapes = pair.adapter.spec.layer_shapes
    n_mid = 10 if pair.layout == "sdxl" else 1  # mid-block layers come last in checkpoint order
    wrong = {k: dict(v) for k, v in pair.ip_state.items()}
    ip = wrong["ip_adapter"]
    for kv in ("k", "v"):
        if fault == "swapped layers":
            b = len(shapes) - 1
            a = shapes.index(shapes[b])
            ka, kb = f"{2 * a + 1}.to_{kv}_ip.weight", f"{2 * b + 1}.to_{kv}_ip.weight"
            ip[ka], ip[kb] = ip[kb], ip[ka]
        else:
            for n in range(len(shapes) - n_mid, len(shapes)):
                key = f"{2 * n + 1}.to_{kv}_ip.weight"
                ip[key] = torch.zeros_like(ip[key])
    z = TARGETS[1]
    x = pair.noise[:1]
    patched = QualityCondition().apply(
        pair.model, pair.adapter, targets_text(z), "z-score", 1.0, 0.0, 1.0, "zeros", NEG_STRENGTH
    )[0]
    host = pair.host_eps(patched, x, SIGMA, with_uncond=False)[0]
    ref_wrong = pair.diffusers_eps(pair._ip_unet(wrong), x, SIGMA, pair.ctx_pos, encoded(z), 1.0)
    assert rel_err(host, ref_wrong) > 100 * REL_TOL
