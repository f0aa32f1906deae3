"""The binding point between the core and the host's model patcher.

Uses only what every host version has: ModelPatcher.clone(), .model_options["transformer_options"],
.set_model_attn2_replace(patch, block, number, transformer_index), .set_model_input_block_patch(patch),
.set_model_sampler_post_cfg_function(fn) and .get_model_object("diffusion_model" | "model_sampling").
Nothing here imports the host, nor assumes that clone() copies the patch objects (the newest host shares them).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .attention import AttentionFn, DecoupledCrossAttention, QualityTokens
from .checkpoint import AdapterSpec
from .layers import AttnSite, find_attn2_sites, match_sites
from .patch_watch import install_watch


def model_sites(model: Any) -> list[AttnSite]:
    """The cross-attention sites of a host ModelPatcher's UNet."""
    return find_attn2_sites(model.get_model_object("diffusion_model"))


def check_model(model: Any, spec: AdapterSpec, name: str) -> list[AttnSite]:
    """The model's attn2 sites, after checking layer by layer that the adapter fits them."""
    sites = model_sites(model)
    match_sites(spec, sites, name)
    return sites


def sigma_window(model: Any, start_percent: float, end_percent: float) -> tuple[Optional[float], Optional[float]]:
    """Start/end as a fraction of the schedule -> (sigma_start, sigma_end); None where unbounded."""
    sampling = model.get_model_object("model_sampling")
    s = None if start_percent <= 0.0 else float(sampling.percent_to_sigma(start_percent))
    e = None if end_percent >= 1.0 else float(sampling.percent_to_sigma(end_percent))
    return s, e


def final_sigma(model: Any) -> float:
    """The model's smallest sigma, where full schedules take their last step."""
    return float(model.get_model_object("model_sampling").sigma_min)


def attach_quality_tokens(
    model: Any,
    spec: AdapterSpec,
    tokens: QualityTokens,
    attention: AttentionFn,
    name: str,
    layer_weights: Optional[Sequence[float]] = None,
) -> Any:
    """Validate the adapter against the model, then return a clone with the tokens on every attn2 layer.

    The input model is never changed. An IQA patch already on a layer gains a contribution; a foreign
    patch (keyed by the full site key or by (block, number) alone) is wrapped and still called, and so is
    one registered later by (block, number) (see patch_watch.py). Scale 0, or a mask of zeros,
    returns an unpatched clone (after the same checks), so "off" costs nothing per step.
    layer_weights (per layer, checkpoint order; block_weights.py) scale each layer's term through its V_ip;
    a layer at weight 0 is left unpatched.
    """
    sites = check_model(model, spec, name)  # raises before anything is cloned or patched
    patched = model.clone()
    if layer_weights is not None:
        if len(layer_weights) != len(sites):
            raise ValueError(f"{len(layer_weights)} layer weights for {len(sites)} cross-attention layers")
        tokens = tokens.with_layer_weights(layer_weights)
    on = [n for n in range(len(sites)) if layer_weights is None or layer_weights[n] != 0.0]
    if tokens.silent or not on:
        return patched
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for n in on:
        site = sites[n]
        current = existing.get(site.key, existing.get(site.key[:2]))
        if getattr(current, "is_iqa_adapter_patch", False):
            patch = current.with_contribution(tokens, n)
        else:
            patch = DecoupledCrossAttention(((tokens, n),), attention, inner=current)
        patched.set_model_attn2_replace(patch, site.key[0], site.key[1], site.key[2])
    install_watch(patched, tuple(sites[n].key for n in on))
    return patched
