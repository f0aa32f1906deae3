"""A catalog of bad input, through the real host's HTTP prompt queue.

Each case sends one bad prompt to a long-lived host and checks three things:
  * the error names the input (or the file, or the value) and says what to do about it, and it is the
    pack's own error (IQAAdapterError) or the host's HTTP 400 validation answer: never a crash deep in torch;
    a few inputs are documented as accepted (RGBA, greyscale, over-range pixels): those are checked for the
    documented result instead;
  * the host is still serving;
  * the next good prompt gives exactly the images that a fresh host gives for the same prompt: nothing a
    bad prompt did (a patched model, a half-built condition) survives in the host's cache.
The fresh host is a second process that only ever sees good prompts; it works through its queue while
the catalog runs. Both run one thread each, like CI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import conftest
import pytest
import reliability_host as rh
import server_host
import torch
from reliability_host import PromptFailed, PromptRejected
from safetensors.torch import save_file

pytestmark = pytest.mark.server

GOOD_SEED = 5000  # good prompt i uses seed GOOD_SEED + i, so the host cannot answer it from its cache
BAD_SEED = 77
KIB = 1024
PACK_ERRORS = {"IQAAdapterError", "MissingWeightsError"}


# -- files the cases load --------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create a directory: proof that a pickle ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _adapter_with_header(path: Path, header_text: Optional[str], input_dim: int = 2, layout: str = rh.LAYOUT) -> None:
    sd = rh.tiny_models().adapter_state(layout, input_dim, seed=3)
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(path),
        metadata=None if header_text is None else {"iqa_adapter": header_text},
    )


def _write_flat(path: Path, state: dict, header_text: str) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"iqa_adapter": header_text})


def _plus_state(tiny) -> dict:
    """An IP-Adapter Plus layout: a resampler image projection (latents, proj_in, layers, proj_out, norm_out)."""
    state = {k: v for k, v in tiny.adapter_state(rh.LAYOUT, 2, seed=3).items() if k.startswith("ip_adapter.")}
    width = state["ip_adapter.1.to_k_ip.weight"].shape[1]
    state.update(
        {
            "image_proj.latents": torch.randn(1, 4, width),
            "image_proj.proj_in.weight": torch.randn(width, 32),
            "image_proj.proj_in.bias": torch.zeros(width),
            "image_proj.layers.0.0.norm1.weight": torch.ones(width),
            "image_proj.proj_out.weight": torch.randn(width, width),
            "image_proj.norm_out.weight": torch.ones(width),
        }
    )
    return state


def _without_layers(state: dict, layers: list[int]) -> dict:
    drop = {f"ip_adapter.{2 * n + 1}.to_{kv}_ip.weight" for n in layers for kv in "kv"}
    return {k: v for k, v in state.items() if k not in drop}


def write_bad_files(ws: Path) -> None:
    folder = ws / "models" / "iqa_adapter"
    tiny = rh.tiny_models()
    good = (folder / rh.QUALITY).read_bytes()
    rnd = random.Random(0)
    meta = json.dumps(rh.QUALITY_META)
    (folder / "zero.safetensors").write_bytes(b"")
    (folder / "truncated.safetensors").write_bytes(good[: len(good) * 3 // 5])
    (folder / "garbage.safetensors").write_bytes(bytes(rnd.getrandbits(8) for _ in range(4096)))
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0.lora_down.weight": torch.randn(4, 32),
            "lora_unet_down_blocks_0_attentions_0.lora_up.weight": torch.randn(32, 4),
        },
        str(folder / "lora.safetensors"),
    )
    torch.save([1, 2, 3], folder / "a_list.pt")
    torch.save({"image_proj": _Payload(str(ws / "PICKLE_RAN_adapter")), "ip_adapter": {}}, folder / "evil.pt")
    (folder / "evil.json").write_text(meta)
    tiny.write_adapter(folder / "sdxl.safetensors", "sdxl", dict(rh.QUALITY_META, base_model="sdxl"))
    _adapter_with_header(folder / "wrong_dim.safetensors", meta, input_dim=3)
    _adapter_with_header(folder / "no_meta.safetensors", None)
    _adapter_with_header(folder / "big_header.safetensors", json.dumps(dict(rh.QUALITY_META, comment="x" * 70 * KIB)))
    _adapter_with_header(folder / "bad_header.safetensors", '{"metrics": ["topiq_nr", "laion_aes"')
    _adapter_with_header(folder / "list_header.safetensors", '["topiq_nr", "laion_aes"]')
    _adapter_with_header(folder / "big_sidecar.safetensors", None)
    (folder / "big_sidecar.json").write_text(json.dumps(dict(rh.QUALITY_META, comment="x" * 70 * KIB)))
    _adapter_with_header(folder / "bad_sidecar.safetensors", None)
    (folder / "bad_sidecar.json").write_text("metrics: topiq_nr, laion_aes\n")
    _adapter_with_header(
        folder / "unknown_metric.safetensors", json.dumps(dict(rh.QUALITY_META, metrics=["topiq", "laion_aes"]))
    )
    _adapter_with_header(folder / "unknown_field.safetensors", json.dumps(dict(rh.QUALITY_META, metricz=["topiq_nr"])))
    _adapter_with_header(folder / "ref_spec_mismatch.safetensors", json.dumps(rh.REFERENCE_META), input_dim=100)
    (folder / "repeated_sidecar.json").write_text(json.dumps(dict(rh.QUALITY_META, metrics=["topiq_nr", "topiq_nr"])))
    _adapter_with_header(folder / "repeated_sidecar.safetensors", None)
    _write_flat(folder / "plus.safetensors", _plus_state(tiny), meta)
    state = tiny.adapter_state(rh.LAYOUT, 2, seed=3)
    _write_flat(
        folder / "no_to_v.safetensors", {k: v for k, v in state.items() if k != "ip_adapter.3.to_v_ip.weight"}, meta
    )
    bad_shape = dict(state)
    bad_shape["ip_adapter.3.to_v_ip.weight"] = state["ip_adapter.3.to_v_ip.weight"][:-8]
    _write_flat(folder / "v_shape.safetensors", bad_shape, meta)
    _write_flat(folder / "gap.safetensors", _without_layers(state, [7]), meta)
    _write_flat(folder / "no_last_layer.safetensors", _without_layers(state, [15]), meta)
    _adapter_with_header(folder / "twice_sidecar.safetensors", None)
    (folder / "twice_sidecar.json").write_text('{"metrics": ["topiq_nr", "laion_aes"], "metrics": ["laion_aes"]}')
    # A valid adapter outside the adapter folder: only path traversal could reach it.
    tiny.write_adapter(ws / "models" / "outside.safetensors", rh.LAYOUT, rh.QUALITY_META)
    # IQA weights: an unsafe pickle under the name of TOPIQ's checkpoint.
    iqa = ws / "models" / "iqa"
    iqa.mkdir(exist_ok=True)
    torch.save({"params": _Payload(str(ws / "PICKLE_RAN_iqa"))}, iqa / "cfanet_nr_koniq_res50-9a73138b.pth")


# -- graph pieces ------------------------------------------------------------------------------------------


def base() -> dict:
    return rh.graph(BAD_SEED)


def set_in(p: dict, node: str, **inputs) -> dict:
    p[node]["inputs"].update(inputs)
    return p


def loader(name: str, override: str = "") -> Callable[[], dict]:
    return lambda: set_in(base(), "adapter", adapter_name=name, metadata_override=override)


def qc(**inputs) -> Callable[[], dict]:
    return lambda: set_in(base(), "qc", **inputs)


def masked(kind: str, batch: int = 1, targets: str = "99") -> Callable[[], dict]:
    """Quality Condition with a mask made from an odd image (the host's Image To Mask, red channel)."""

    def build() -> dict:
        p = set_in(base(), "qc", targets=targets, mask=["mask", 0])
        p["mask_image"] = image(kind, batch=batch)
        p["mask"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}}
        return p

    return build


def image(kind: str, size: int = 64, batch: int = 1, seed: int = 3) -> dict:
    return {
        "class_type": "IQARelOddImage",
        "inputs": {"kind": kind, "width": size, "height": size, "seed": seed, "batch": batch},
    }


def scoring(*kinds: str, size: int = 64, metric: str = "piqe", batch_size: int = 4) -> dict:
    """IQA Score of each image kind (nodes img_<i> / score_<i>), with the plot previews that make the host run them."""
    p = {"iqa": {"class_type": "IQALoadModel", "inputs": {"metric": metric, "allow_download": False, "device": "cpu"}}}
    for i, kind in enumerate(kinds):
        p[f"img_{i}"] = image(kind, size)
        p[f"score_{i}"] = {
            "class_type": "IQAScore",
            "inputs": {"image": [f"img_{i}", 0], "iqa_model": ["iqa", 0], "batch_size": batch_size},
        }
        p[f"plot_{i}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"score_{i}", 4]}}
    return p


def score_case(*kinds: str, **kw) -> Callable[[], dict]:
    return lambda: scoring(*kinds, **kw)


def reference(
    kind: str = "rgb",
    size: int = 64,
    n: int = 1,
    metric: str = "topiq_nr",
    adapter: str = rh.REFERENCE,
    latent_batch: int = 1,
    **rqt,
) -> dict:
    """The base graph with Reference Quality Transfer (random-weight TOPIQ) in place of Quality Condition."""
    p = base()
    p["ref_adapter"] = {"class_type": "IQAAdapterLoader", "inputs": {"adapter_name": adapter, "metadata_override": ""}}
    p["ref_img"] = image(kind, size, n)
    p["ref_iqa"] = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": metric}}
    p["rqt"] = {
        "class_type": "IQAReferenceQualityTransfer",
        "inputs": dict(
            {
                "model": ["model", 0],
                "iqa_adapter": ["ref_adapter", 0],
                "reference": ["ref_img", 0],
                "iqa_model": ["ref_iqa", 0],
                "scale": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
            },
            **rqt,
        ),
    }
    p["ks"]["inputs"]["model"] = ["rqt", 0]
    p["latent"]["inputs"]["batch_size"] = latent_batch
    return p


def ref_case(**kw) -> Callable[[], dict]:
    return lambda: reference(**kw)


def guidance(iqa: dict, model: Optional[list] = None, **gg) -> dict:
    """The base graph with IQA Gradient Guidance after Quality Condition."""
    p = base()
    p["vae"] = {"class_type": "IQATestTinyVAE", "inputs": {"seed": 5}}
    p["gg_iqa"] = iqa
    p["gg"] = {
        "class_type": "IQAGradientGuidance",
        "inputs": dict(
            {
                "model": model or ["qc", 0],
                "iqa_model": ["gg_iqa", 0],
                "vae": ["vae", 0],
                "scale": 0.1,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "every_n_steps": 1,
                "direction": "maximize",
                "target_z": 2.0,
                "max_decode_size": 64,
                "normalization": "rms",
                "clip": 0.0,
                "sigma_weighting": "constant",
            },
            **gg,
        ),
    }
    p["ks"]["inputs"]["model"] = ["gg", 0]
    return p


def interrupted_guidance() -> dict:
    """A guided run that the host interrupts after its first guided step (as POST /interrupt would)."""
    return guidance({"class_type": "IQARelInterruptingIQAModel", "inputs": {}})


def no_copies_left(entry: Optional[dict], host: rh.Host) -> None:
    """After the interrupted run, its guidance hook holds no decoder or metric copies. The probe gets the guided
    MODEL from the host's cache (the same nodes and inputs as the interrupted prompt), so it sees the very
    hook that ran: one that has guided a step."""
    p = interrupted_guidance()
    p = {k: v for k, v in p.items() if k in upstream(p, "gg")}
    p["copies"] = {
        "class_type": "IQARelGuidanceCopiesProbe",
        "inputs": {"model": ["gg", 0], "nonce": random.randrange(2**31)},
    }
    text = "\n".join(run(host, p)["outputs"]["copies"]["text"])
    assert "guided [1]" in text, text


def upstream(prompt: dict, node_id: str) -> set[str]:
    """node_id and every node it reads from, directly or not."""
    out, todo = set(), [node_id]
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo += [v[0] for v in prompt[n]["inputs"].values() if isinstance(v, list) and v]
    return out


CNNIQA = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "cnniqa"}}
PIQE = {"class_type": "IQALoadModel", "inputs": {"metric": "piqe", "allow_download": False, "device": "cpu"}}


def gg_case(iqa: dict = CNNIQA, **kw) -> Callable[[], dict]:
    return lambda: guidance(iqa, **kw)


def decoder_mismatch() -> dict:
    p = guidance(CNNIQA, model=["model16", 0])
    p["model16"] = {"class_type": "IQARelTinyModel16", "inputs": {"seed": 0}}
    return p


def with_scores(scores: dict, latent_batch: int = 1) -> Callable[[], dict]:
    def build() -> dict:
        p = base()
        p["scores"] = {"class_type": "IQARelScores", "inputs": {"scores": json.dumps(scores)}}
        p["qc"]["inputs"]["reference_scores"] = ["scores", 0]
        p["latent"]["inputs"]["batch_size"] = latent_batch
        return p

    return build


def best_of_n(scores: Optional[dict] = None, batch: int = 2, **inputs) -> Callable[[], dict]:
    """IQA Best of N on a batch of images, ranked by PIQE through IQA Score, or by given scores (IQARelScores)."""

    def build() -> dict:
        p = scoring("rgb")
        p["img_0"]["inputs"]["batch"] = batch
        p["best"] = {
            "class_type": "IQABestOfN",
            "inputs": dict(
                {
                    "images": ["img_0", 0],
                    "iqa_scores": ["score_0", 5],
                    "mode": "best k",
                    "k": 1,
                    "percentile": 75.0,
                    "if_none_kept": "error",
                },
                **inputs,
            ),
        }
        if scores is not None:
            p["given"] = {"class_type": "IQARelScores", "inputs": {"scores": json.dumps(scores)}}
            p["best"]["inputs"]["iqa_scores"] = ["given", 0]
        p["best_view"] = {"class_type": "PreviewImage", "inputs": {"images": ["best", 0]}}
        return p

    return build


def genziqa_load(name: str) -> Callable[[], dict]:
    def build() -> dict:
        p = scoring("rgb")
        p["ckpt"] = {"class_type": "IQATestTinyCheckpoint", "inputs": {"layout": "sd15", "seed": 0}}
        p["iqa"] = {
            "class_type": "IQALoadGenzIQA",
            "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "genziqa_name": name},
        }
        return p

    return build


def iqa_load(metric: str, node: str = "IQALoadModel") -> Callable[[], dict]:
    def build() -> dict:
        p = scoring("rgb")
        p["iqa"] = {"class_type": node, "inputs": {"metric": metric}}
        if node == "IQALoadModel":
            p["iqa"]["inputs"].update(allow_download=False, device="cpu")
        return p

    return build


# -- checks for the inputs that are accepted ---------------------------------------------------------------


def score_of(entry: dict, node_id: str) -> list[float]:
    text = "\n".join(entry["outputs"][node_id]["text"])
    return [float(line.split("\t")[1]) for line in text.splitlines() if re.match(r"^\d+\t", line)]


def same_scores(entry: dict, host: rh.Host) -> None:
    a, b = score_of(entry, "score_0"), score_of(entry, "score_1")
    assert len(a) == 1 and a == pytest.approx(b, abs=1e-6), (a, b)


def same_images(entry: dict, host: rh.Host) -> None:
    files = host.output_images(entry)
    assert rh.image_digest(files["save"][0]) == rh.image_digest(files["save_b"][0])


def rgba_vs_rgb_reference() -> dict:
    """Two references, RGBA and its RGB part, conditioning two samplers that are otherwise the same."""
    p = reference("rgba")
    p["ref_img_b"] = image("rgb")
    p["rqt_b"] = {
        "class_type": "IQAReferenceQualityTransfer",
        "inputs": dict(p["rqt"]["inputs"], reference=["ref_img_b", 0]),
    }
    p["ks_b"] = {"class_type": "KSampler", "inputs": dict(p["ks"]["inputs"], model=["rqt_b", 0])}
    p["img_b"] = {"class_type": "IQATestLatentToImage", "inputs": {"samples": ["ks_b", 0]}}
    p["save_b"] = {"class_type": "SaveImage", "inputs": {"images": ["img_b", 0], "filename_prefix": "rel_b"}}
    return p


# -- the catalog -------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    build: Callable[[], dict]
    # "rejected": HTTP 400 at validation; "failed": an execution error; "accepted": runs, then `check`;
    # "interrupted": the host interrupts the run (execution_interrupted), then `check`
    outcome: str
    node: Optional[str] = None  # the node type the execution error must come from
    names: tuple[str, ...] = ()  # what the error must name: the input, the file, the value (case-insensitive)
    fix: str = ""  # regex (case-insensitive) for what the error tells the user to do
    check: Optional[Callable[[dict, rh.Host], None]] = None
    marker: Optional[str] = None  # a file that must not exist afterwards (proof that no pickle ran)
    upstream: Optional[dict] = None  # fields that differ on upstream ComfyUI, whose validator does more (below)

    def on_host(self, upstream: bool) -> "Case":
        return dataclasses.replace(self, **self.upstream) if upstream and self.upstream else self


def upstream_rejects(names: tuple[str, ...], fix: str) -> dict:
    """Upstream validates optional inputs and the types of links too, so it answers HTTP 400 naming the
    input before the pack's node runs; the pack's own check (tested on the fork) is then never reached."""
    return dict(outcome="rejected", node=None, names=names, fix=fix)


TYPE_MISMATCH = r"return type mismatch between linked nodes"


NOT_IN_LIST = r"not in \[|value not in list"
LOADER = "IQAAdapterLoader"
CASES = [
    # Files: not adapters, damaged, unsafe.
    Case(
        "zero_byte_file",
        loader("zero.safetensors"),
        "failed",
        LOADER,
        ("zero.safetensors", "0 bytes"),
        r"download it again",
    ),
    Case(
        "truncated_file",
        loader("truncated.safetensors"),
        "failed",
        LOADER,
        ("truncated.safetensors", "truncated"),
        r"download it again",
    ),
    Case(
        "garbage_file", loader("garbage.safetensors"), "failed", LOADER, ("garbage.safetensors",), r"download it again"
    ),
    Case(
        "lora_not_adapter",
        loader("lora.safetensors"),
        "failed",
        LOADER,
        ("lora.safetensors", "not an IQA-Adapter"),
        r"pick an IQA-Adapter file",
    ),
    Case(
        "pickle_of_a_list",
        loader("a_list.pt"),
        "failed",
        LOADER,
        ("a_list.pt", "list"),
        r"not an IQA-Adapter state dict",
    ),
    Case(
        "unsafe_pickle_adapter",
        loader("evil.pt"),
        "failed",
        LOADER,
        ("evil.pt",),
        r"download it again",
        marker="PICKLE_RAN_adapter",
    ),
    # Wrong base model; metadata that disagrees with the weights, or is missing, oversized, garbage.
    Case(
        "wrong_base_model",
        loader("sdxl.safetensors"),
        "failed",
        "IQAQualityCondition",
        ("sdxl.safetensors", "SDXL", "SD1.5"),
        r"made for this base model",
    ),
    Case(
        "metadata_disagrees_with_weights",
        loader("wrong_dim.safetensors"),
        "failed",
        LOADER,
        ("wrong_dim.safetensors", "2 metrics", "takes 3"),
        r"fix the metadata",
    ),
    Case(
        "no_metadata",
        loader("no_meta.safetensors"),
        "failed",
        LOADER,
        ("no_meta.safetensors", "metrics"),
        r"add a sidecar.*metadata_override",
    ),
    Case(
        "oversized_header_json",
        loader("big_header.safetensors"),
        "failed",
        LOADER,
        ("big_header.safetensors", "64 KiB"),
        r"sidecar|override",
    ),
    Case(
        "garbage_header_json",
        loader("bad_header.safetensors"),
        "failed",
        LOADER,
        ("bad_header.safetensors", "not valid JSON"),
        r"fix or remove",
    ),
    Case(
        "header_json_not_object",
        loader("list_header.safetensors"),
        "failed",
        LOADER,
        ("list_header.safetensors", "JSON object"),
        r"must be a JSON object",
    ),
    Case(
        "oversized_sidecar",
        loader("big_sidecar.safetensors"),
        "failed",
        LOADER,
        ("big_sidecar.json", "64 KiB"),
        r"sidecar|override",
    ),
    Case(
        "garbage_sidecar",
        loader("bad_sidecar.safetensors"),
        "failed",
        LOADER,
        ("bad_sidecar.json", "not valid JSON"),
        r"fix or remove",
    ),
    Case(
        "unknown_metric_in_metadata",
        loader("unknown_metric.safetensors"),
        "failed",
        LOADER,
        ("unknown metric 'topiq'",),
        r"did you mean topiq_nr",
    ),
    Case("unknown_metadata_field", loader("unknown_field.safetensors"), "failed", LOADER, ("metricz",), r"known: \["),
    Case(
        "metric_repeated_in_sidecar",
        loader("repeated_sidecar.safetensors"),
        "failed",
        LOADER,
        ("repeated_sidecar.json", "topiq_nr", "more than once"),
        r"list each metric once",
    ),
    Case(
        "metric_repeated_in_override",
        loader(rh.QUALITY, '{"metrics": ["topiq_nr", "topiq_nr"]}'),
        "failed",
        LOADER,
        ("metadata_override", "topiq_nr", "more than once"),
        r"list each metric once",
    ),
    Case(
        "metrics_as_text",
        loader(rh.QUALITY, '{"metrics": "topiq_nr"}'),
        "failed",
        LOADER,
        ("'metrics'", "'topiq_nr'", "text"),
        r'must be a JSON list .*\["topiq_nr", "laion_aes"\]',
    ),
    Case(
        "ip_adapter_plus_file",
        loader("plus.safetensors"),
        "failed",
        LOADER,
        ("plus.safetensors", "IP-Adapter Plus", "resampler"),
        r"use it with an IP-Adapter node pack",
    ),
    Case(
        "layer_missing_to_v_ip",
        loader("no_to_v.safetensors"),
        "failed",
        LOADER,
        ("ip_adapter.3.to_v_ip.weight", "missing"),
        r"download it again",
    ),
    Case(
        "layer_missing_in_the_middle",
        loader("gap.safetensors"),
        "failed",
        LOADER,
        ("gap.safetensors", "SD1.5", "ip_adapter.1 to ip_adapter.31", "layer(s) 7 (ip_adapter.15"),
        r"incomplete: download it again",
    ),
    Case(
        "last_layer_missing",
        loader("no_last_layer.safetensors"),
        "failed",
        LOADER,
        ("no_last_layer.safetensors", "16 cross-attention layers", "layer(s) 15 (ip_adapter.31"),
        r"incomplete: download it again",
    ),
    Case(
        "json_key_twice_in_sidecar",
        loader("twice_sidecar.safetensors"),
        "failed",
        LOADER,
        ("twice_sidecar.json", "'metrics' twice"),
        r"keep one 'metrics' and delete the other",
    ),
    Case(
        "json_key_twice_in_override",
        loader(rh.QUALITY, '{"metrics": ["topiq_nr", "laion_aes"], "use_flag": false, "use_flag": true}'),
        "failed",
        LOADER,
        ("metadata_override", "'use_flag' twice"),
        r"keep one 'use_flag' and delete the other",
    ),
    Case(
        "layer_to_v_ip_wrong_shape",
        loader("v_shape.safetensors"),
        "failed",
        LOADER,
        ("ip_adapter.3.to_k_ip.weight", "ip_adapter.3.to_v_ip.weight", "[32, 48]", "[24, 48]"),
        r"download it again",
    ),
    Case(
        "override_garbage_json",
        loader(rh.QUALITY, "{metrics: topiq_nr}"),
        "failed",
        LOADER,
        ("metadata_override", "not valid JSON"),
        r"fix or remove",
    ),
    Case(
        "override_oversized",
        loader(rh.QUALITY, json.dumps({"comment": "y" * 70 * KIB})),
        "failed",
        LOADER,
        ("metadata_override", "64 KiB"),
        r"sidecar|override",
    ),
    Case(
        "override_disagrees_with_weights",
        loader(rh.QUALITY, '{"metrics": ["topiq_nr", "laion_aes", "musiq"]}'),
        "failed",
        LOADER,
        ("3 metrics", "takes 2"),
        r"fix the metadata",
    ),
    Case(
        "reference_spec_disagrees_with_weights",
        loader("ref_spec_mismatch.safetensors"),
        "failed",
        LOADER,
        ("ref_spec_mismatch.safetensors", "takes 100"),
        r"fix the 'embedding' metadata",
    ),
    # Path traversal through the API: the host validates combo values against the folder's listing.
    Case(
        "traversal_dotdot",
        loader("../outside.safetensors"),
        "rejected",
        names=("adapter_name", "../outside.safetensors"),
        fix=NOT_IN_LIST,
    ),
    Case(
        "traversal_nested",
        loader("sub/../../outside.safetensors"),
        "rejected",
        names=("adapter_name",),
        fix=NOT_IN_LIST,
    ),
    Case(
        "traversal_absolute",
        lambda: set_in(base(), "adapter", adapter_name=str(HOST_MODELS / "outside.safetensors")),
        "rejected",
        names=("adapter_name", "outside.safetensors"),
        fix=NOT_IN_LIST,
    ),
    Case(
        "traversal_backslash", loader("..\\outside.safetensors"), "rejected", names=("adapter_name",), fix=NOT_IN_LIST
    ),
    Case("traversal_iqa_metric", iqa_load("../../models/outside"), "rejected", names=("metric",), fix=NOT_IN_LIST),
    Case(
        "genziqa_file_not_in_folder",
        genziqa_load("../../models/outside.safetensors"),
        "rejected",
        names=("genziqa_name",),
        fix=NOT_IN_LIST,
    ),
    # Targets a careless client writes: a trailing comma, thousands of lines.
    Case(
        "targets_trailing_comma",
        qc(targets="99,"),
        "failed",
        "IQAQualityCondition",
        ("targets", "'99,'"),
        r"remove the trailing or doubled comma",
    ),
    Case(
        "targets_pairs_trailing_comma",
        qc(targets="topiq_nr=99, laion_aes=90,"),
        "failed",
        "IQAQualityCondition",
        ("targets", "'topiq_nr=99, laion_aes=90,'"),
        r"remove the trailing or doubled comma",
    ),
    Case(
        "targets_too_many_lines",
        qc(targets="99\n" * 20000),
        "failed",
        "IQAQualityCondition",
        ("targets", "20000 target lines", "at most 4096"),
        r"one line per latent of the batch",
    ),
    # A guided run interrupted mid-way: its differentiable copies go with the run.
    Case("interrupted_guided_run", interrupted_guidance, "interrupted", check=no_copies_left),
    # Numbers: NaN passes the host's min/max check (every comparison with NaN is false), inf does not.
    Case("scale_nan", qc(scale=float("nan")), "failed", "IQAQualityCondition", ("scale", "nan"), r"finite number"),
    Case("scale_inf", qc(scale=float("inf")), "rejected", names=("scale",), fix=r"max"),
    Case("scale_out_of_range", qc(scale=9.0), "rejected", names=("scale", "9"), fix=r"bigger than max"),
    Case(
        "negative_strength_nan",
        qc(uncond="negative quality", negative_strength=float("nan")),
        "failed",
        "IQAQualityCondition",
        ("negative_strength", "nan"),
        r"finite number",
    ),
    Case(
        "start_after_end",
        qc(start_percent=0.8, end_percent=0.2),
        "failed",
        "IQAQualityCondition",
        ("start_percent", "end_percent"),
        r"0 <= start <= end <= 1",
    ),
    Case("target_nan", qc(targets="nan"), "failed", "IQAQualityCondition", ("nan",), r"finite numbers"),
    Case("target_overflow", qc(targets="1e400"), "failed", "IQAQualityCondition", ("1e400",), r"finite numbers"),
    Case(
        "target_percentile_out_of_range",
        qc(targets="150"),
        "failed",
        "IQAQualityCondition",
        ("150", "percentile"),
        r"give a percentile between 0 and 100",
    ),
    Case(
        "target_zscore_out_of_range",
        qc(targets="40", target_mode="z-score"),
        "failed",
        "IQAQualityCondition",
        ("40", "z-score"),
        r"use a value inside",
    ),
    Case(
        "target_not_a_number",
        qc(targets="high"),
        "failed",
        "IQAQualityCondition",
        ("'high'", "not a number"),
        r"target",
    ),
    Case("target_empty", qc(targets=" ; \n"), "failed", "IQAQualityCondition", ("no targets",), r"write e\.g\. '99'"),
    Case(
        "target_metric_twice",
        qc(targets="topiq_nr=50, topiq_nr=60, laion_aes=50"),
        "failed",
        "IQAQualityCondition",
        ("topiq_nr", "twice"),
        r"give each metric one value",
    ),
    Case(
        "target_written_p99",
        qc(targets="p99"),
        "failed",
        "IQAQualityCondition",
        ("'p99'", "not a number"),
        r"write 99\b",
    ),
    Case(
        "target_unknown_metric",
        qc(targets="musiq=99"),
        "failed",
        "IQAQualityCondition",
        ("musiq",),
        r"name only the adapter's metrics",
    ),
    Case(
        "guidance_target_z_nan",
        gg_case(target_z=float("nan")),
        "failed",
        "IQAGradientGuidance",
        ("target_z", "nan"),
        r"finite number",
    ),
    Case(
        "guidance_scale_nan",
        gg_case(scale=float("nan")),
        "failed",
        "IQAGradientGuidance",
        ("scale", "nan"),
        r"finite number",
    ),
    Case(
        "guidance_every_n_steps_zero",
        gg_case(every_n_steps=0),
        "rejected",
        names=("every_n_steps",),
        fix=r"smaller than min",
    ),
    Case(
        "reference_scale_nan",
        ref_case(scale=float("nan")),
        "failed",
        "IQAReferenceQualityTransfer",
        ("scale", "nan"),
        r"finite number",
    ),
    # Optional inputs: the fork validates required inputs only, so optional ones reach the nodes as sent.
    Case(
        "score_batch_size_zero",
        score_case("rgb", batch_size=0),
        "failed",
        "IQAScore",
        ("batch_size", "0"),
        r"whole number of at least 1",
        upstream=upstream_rejects(("batch_size", "0"), r"smaller than min of 1"),
    ),
    Case(
        "score_batch_size_text",
        score_case("rgb", batch_size="four"),
        "failed",
        "IQAScore",
        ("batch_size", "four"),
        r"whole number of at least 1",
        upstream=upstream_rejects(("batch_size", "four"), r"failed to convert .*INT"),
    ),
    # (upstream turns the number into the text "5", which is JSON but not an object)
    Case(
        "override_not_text",
        loader(rh.QUALITY, 5),
        "failed",
        LOADER,
        ("metadata_override", "int"),
        r"must be JSON text.*leave it empty",
        upstream=dict(fix=r"must be a JSON object.*or remove it"),
    ),
    Case(
        "guidance_weight_text",
        lambda: set_in(guidance(CNNIQA), "gg", iqa_model_2=["gg_iqa", 0], weight_2="x"),
        "failed",
        "IQAGradientGuidance",
        ("weight_2", "'x'"),
        r"finite number",
        upstream=upstream_rejects(("weight_2", "x"), r"failed to convert .*FLOAT"),
    ),
    Case(
        "guidance_second_metric_is_a_vae",
        lambda: set_in(guidance(CNNIQA), "gg", iqa_model_2=["vae", 0]),
        "failed",
        "IQAGradientGuidance",
        ("VAE", "not an IQA model"),
        r"connect Load IQA Model",
        upstream=upstream_rejects(("iqa_model_2", "VAE", "IQA_MODEL"), TYPE_MISMATCH),
    ),
    Case(
        "reference_scores_from_an_image",
        lambda: set_in(dict(base(), im=image("rgb")), "qc", reference_scores=["im", 0]),
        "failed",
        "IQAQualityCondition",
        ("reference_scores", "Tensor"),
        r"connect the iqa_scores output",
        upstream=upstream_rejects(("reference_scores", "IMAGE", "IQA_SCORES"), TYPE_MISMATCH),
    ),
    Case(
        "score_previous_scores_from_an_image",
        lambda: set_in(scoring("rgb"), "score_0", previous_scores=["img_0", 0]),
        "failed",
        "IQAScore",
        ("previous_scores", "Tensor"),
        r"connect an IQA Score's iqa_scores output",
        upstream=upstream_rejects(("previous_scores", "IMAGE", "IQA_SCORES"), TYPE_MISMATCH),
    ),
    Case(
        "iqa_device_unknown",
        lambda: set_in(scoring("rgb"), "iqa", device="gpu"),
        "failed",
        "IQALoadModel",
        ("device", "gpu"),
        r"one of \('auto', 'cpu'\)",
        upstream=upstream_rejects(("device", "gpu"), NOT_IN_LIST),
    ),
    # Images: empty, tiny, NaN; RGBA, greyscale and out-of-range pixels are accepted as documented.
    Case("score_empty_batch", score_case("empty"), "failed", "IQAScore", ("empty",), r"connect|give"),
    Case("score_tiny_image", score_case("rgb", size=8), "failed", "IQAScore", ("8x8", "16 px"), r"upscale"),
    Case("score_nan_pixels", score_case("nan"), "failed", "IQAScore", ("NaN",), r"check the node that made them"),
    Case("score_inf_pixels", score_case("inf"), "failed", "IQAScore", ("infinite",), r"check the node that made them"),
    Case(
        "score_a_mask",
        lambda: dict(
            scoring("rgb"), img_0={"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 64, "height": 64}}
        ),
        "failed",
        "IQAScore",
        ("MASK", "[1, 64, 64]"),
        r"convert mask to image",
        upstream=upstream_rejects(("image", "MASK", "IMAGE"), TYPE_MISMATCH),
    ),
    Case("score_rgba_is_its_rgb", score_case("rgba", "rgb"), "accepted", check=same_scores),
    Case("score_grey_alpha_is_grey_rgb", score_case("grey_alpha", "grey_rgb"), "accepted", check=same_scores),
    Case("score_greyscale_is_grey_rgb", score_case("grey", "grey_rgb"), "accepted", check=same_scores),
    Case("score_over_range_is_clamped", score_case("over_range", "clamped"), "accepted", check=same_scores),
    Case(
        "reference_tiny_image",
        ref_case(size=16),
        "failed",
        "IQAReferenceQualityTransfer",
        ("16x16", "32 px"),
        r"upscale",
    ),
    Case(
        "reference_empty_batch",
        ref_case(kind="empty"),
        "failed",
        "IQAReferenceQualityTransfer",
        ("empty",),
        r"connect at least one",
    ),
    Case("reference_rgba_is_its_rgb", rgba_vs_rgb_reference, "accepted", check=same_images),
    # Batch mismatches.
    Case(
        "targets_batch_mismatch",
        lambda: set_in(qc(targets="1; 50; 99")(), "latent", batch_size=2),
        "failed",
        "KSampler",
        ("3 targets", "latent batch is 2"),
        r"use a batch of 3 latents",
    ),
    Case(
        "reference_batch_mismatch",
        ref_case(n=3, latent_batch=2),
        "failed",
        "KSampler",
        ("3 references", "latent batch is 2"),
        r"use a batch of 3",
    ),
    Case(
        "reference_scores_missing_metric",
        with_scores({"topiq_nr": [0.6]}),
        "failed",
        "IQAQualityCondition",
        ("reference_scores", "laion_aes"),
        r"one IQA Score node per adapter metric",
    ),
    Case(
        "reference_scores_nan",
        with_scores({"topiq_nr": [float("nan")], "laion_aes": [5.0]}),
        "failed",
        "IQAQualityCondition",
        ("topiq_nr",),
        r"finite",
    ),
    Case(
        "reference_scores_lengths_differ",
        with_scores({"topiq_nr": [0.5, 0.6], "laion_aes": [5.0, 5.5, 6.0]}),
        "failed",
        "IQAQualityCondition",
        ("reference_scores",),
        r"score the same images",
    ),
    Case(
        "best_of_n_scores_from_another_batch",
        best_of_n({"piqe": [30.0, 40.0, 50.0]}, batch=2),
        "failed",
        "IQABestOfN",
        ("iqa_scores", "3 'piqe' scores", "batch has 2"),
        r"score this same image batch",
    ),
    Case("best_of_n_k_zero", best_of_n(k=0), "rejected", names=("k",), fix=r"smaller than min"),
    Case(
        "best_of_n_threshold_keeps_nothing",
        best_of_n({"topiq_nr": [0.1, 0.2]}, mode="above percentile", percentile=99.0),
        "failed",
        "IQABestOfN",
        ("percentile 99", "topiq_nr"),
        r"lower percentile, or set if_none_kept",
    ),
    Case(
        "best_of_n_unknown_metric_name",
        best_of_n(metric="niqe"),
        "failed",
        "IQABestOfN",
        ("metric", "niqe", "piqe"),
        r"name one of those",
    ),
    Case(
        "block_weights_unknown_block",
        qc(block_weights="input: 1, outptu: 0"),
        "failed",
        "IQAQualityCondition",
        ("block_weights", "outptu"),
        r"valid names: all, input, middle, output, input 1",
    ),
    Case(
        "block_weights_below_zero",
        qc(block_weights="middle: -1"),
        "failed",
        "IQAQualityCondition",
        ("block_weights", "middle", "-1"),
        r"give a finite number >= 0",
    ),
    Case("mask_nan", masked("nan"), "failed", "IQAQualityCondition", ("mask", "NaN"), r"rebuild it"),
    Case("mask_empty", masked("empty"), "failed", "IQAQualityCondition", ("mask", "empty"), r"at least 1x1"),
    Case(
        "mask_over_range",
        masked("over_range"),
        "failed",
        "IQAQualityCondition",
        ("mask", "values from"),
        r"scale it into \[0, 1\]",
    ),
    Case(
        "mask_batch_fits_no_item_count",
        masked("rgb", batch=3, targets="1; 99"),
        "failed",
        "IQAQualityCondition",
        ("mask", "3 masks for 2 target items"),
        r"one mask for the whole batch or one per item",
    ),
    # Metrics and decoders.
    Case(
        "guidance_non_differentiable_metric",
        gg_case(PIQE),
        "failed",
        "IQAGradientGuidance",
        ("piqe", "not differentiable"),
        r"use a differentiable metric",
    ),
    Case(
        "guidance_decoder_mismatch",
        decoder_mismatch,
        "failed",
        "IQAGradientGuidance",
        ("4-channel", "16-channel"),
        r"connect the VAE",
    ),
    Case(
        "unknown_iqa_metric",
        iqa_load("topiqnr", node="IQATestRandomIQAModel"),
        "failed",
        "IQATestRandomIQAModel",
        ("topiqnr",),
        r"did you mean 'topiq_nr'",
    ),
    Case(
        "missing_iqa_weights",
        iqa_load("musiq"),
        "failed",
        "IQALoadModel",
        ("musiq_koniq_ckpt-e95806b9.pth", "huggingface.co"),
        r"put it in .*allow_download",
    ),
    Case(
        "unsafe_pickle_iqa_weights",
        iqa_load("topiq_nr"),
        "failed",
        "IQALoadModel",
        ("cfanet_nr_koniq_res50-9a73138b.pth",),
        r"replace it with a fresh copy",
        marker="PICKLE_RAN_iqa",
    ),
    Case(
        "reference_adapter_in_quality_condition",
        loader(rh.REFERENCE),
        "failed",
        "IQAQualityCondition",
        (rh.REFERENCE, "reference"),
        r"use it with Reference Quality Transfer",
    ),
    Case(
        "quality_adapter_in_reference_transfer",
        ref_case(adapter=rh.QUALITY),
        "failed",
        "IQAReferenceQualityTransfer",
        (rh.QUALITY,),
        r"use it with Quality Condition",
    ),
    Case(
        "reference_with_the_wrong_iqa_model",
        ref_case(metric="cnniqa"),
        "failed",
        "IQAReferenceQualityTransfer",
        ("cnniqa", "topiq_nr"),
        r"load 'topiq_nr' with Load IQA Model",
    ),
]
HOST_MODELS = Path("/nonexistent")  # the catalog host's models folder, set by the fixture (traversal_absolute)


def test_catalog_is_large_and_covers_every_node():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    used = {n["class_type"] for c in CASES for n in c.build().values()}
    assert set(conftest.pack.NODE_CLASS_MAPPINGS) <= used, set(conftest.pack.NODE_CLASS_MAPPINGS) - used


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """(catalog host, fresh host). The fresh host is queued every good prompt at once and works through them."""
    global HOST_MODELS
    root = tmp_path_factory.mktemp("catalog")
    ws = rh.prepare_workspace(root / "catalog")
    write_bad_files(ws)
    rh.prepare_workspace(root / "fresh")
    HOST_MODELS = ws / "models"
    with rh.running_hosts(root / "catalog", root / "fresh") as (catalog, fresh):
        fresh.pending = {i: fresh.queue(rh.graph(GOOD_SEED + i)) for i in range(len(CASES))}
        yield catalog, fresh


def expected_images(fresh: rh.Host, i: int) -> dict[str, list[str]]:
    entry = fresh.wait(fresh.pending[i], timeout=300, poll=0.05)
    return {k: [rh.image_digest(p) for p in v] for k, v in fresh.output_images(entry).items()}


def run(host: rh.Host, prompt: dict) -> dict:
    """Queue a prompt and wait for it. The host runs the outputs that validate and drops the others (HTTP 200
    with node_errors): that counts as a rejection too, raised after the valid part has run."""
    status, body = host.post_prompt(prompt)
    if status != 200:
        raise PromptRejected(status, body)
    entry = host.wait(body["prompt_id"], timeout=300, poll=0.05)
    if body.get("node_errors"):
        raise PartlyRejected(status, body, entry)
    return entry


class PartlyRejected(PromptRejected):
    def __init__(self, status: int, body: dict, entry: dict):
        super().__init__(status, body)
        self.entry = entry


def downstream(prompt: dict, node_ids: set[str]) -> set[str]:
    """The nodes that read, directly or not, from any of node_ids."""
    out, grew = set(node_ids), True
    while grew:
        grew = False
        for k, n in prompt.items():
            if k not in out and any(isinstance(v, list) and v and v[0] in out for v in n["inputs"].values()):
                out.add(k)
                grew = True
    return out


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.id for c in CASES])
def test_bad_input(hosts, i):
    catalog, fresh = hosts
    case = CASES[i].on_host(server_host.host().current)
    prompt = case.build()
    if case.outcome == "accepted":
        entry = run(catalog, prompt)
        case.check(entry, catalog)
    elif case.outcome == "interrupted":
        with pytest.raises(PromptFailed) as info:
            run(catalog, prompt)
        assert "execution_interrupted" in str(info.value.error), rh.error_text(info.value)
        case.check(None, catalog)
    else:
        with pytest.raises((PromptRejected, PromptFailed)) as info:
            run(catalog, prompt)
        text = rh.error_text(info.value)
        if case.outcome == "rejected":
            assert isinstance(info.value, PromptRejected), text
            if isinstance(info.value, PartlyRejected):  # nothing downstream of a rejected node ran
                ran = set((info.value.entry.get("outputs") or {}))
                assert not ran & downstream(prompt, set(info.value.body["node_errors"])), text
            else:
                assert info.value.status == 400, text
        else:
            assert isinstance(info.value, PromptFailed), text
            error = info.value.error
            assert error["node_type"] == case.node, text
            assert error["exception_type"].rsplit(".", 1)[-1] in PACK_ERRORS, f"not the pack's own error: {text}"
        for name in case.names:
            assert name.lower() in text.lower(), f"the error does not name {name!r}: {text}"
        assert re.search(case.fix, text, re.I | re.S), f"the error does not say what to do ({case.fix!r}): {text}"
    if case.marker:
        assert not (catalog.workspace / case.marker).exists(), "a pickle ran code while loading"

    assert catalog.alive()
    assert "IQAQualityCondition" in catalog.get("/object_info/IQAQualityCondition")
    entry = run(catalog, rh.graph(GOOD_SEED + i))
    got = {k: [rh.image_digest(p) for p in v] for k, v in catalog.output_images(entry).items()}
    # Bitwise across the two processes: same machine, same kernels, one thread each, and rh.graph keeps the
    # host's free-RAM batching out of play.
    assert got == expected_images(fresh, i), "the next good prompt differs from a fresh host's"


def test_no_host_process_tried_to_reach_the_network(hosts):
    """Every case above ran with the network guard in both hosts: nothing attempted a non-loopback connection."""
    for host in hosts:
        assert host.network_attempts() == []
