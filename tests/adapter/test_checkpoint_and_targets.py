"""Checkpoint reading, metadata resolution, the normalization table and target encoding."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import pack, ref_encode, tiny
from safetensors.torch import load_file, save_file

A = pack.adapter
Err = A.IQAAdapterError
META = {"metrics": ["topiq_nr", "laion_aes"], "use_flag": False, "pos_encode_L": 0}
SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "CC3M_stats.csv"


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_the_layout_table_names_every_attn2_layer_of_the_host_model(layout):
    """adapter/unet_layouts.py derives the attn2 layers from the block table; the host's model must agree."""
    host = A.layers.find_attn2_sites(tiny.tiny_model(layout).get_model_object("diffusion_model"))
    assert sorted(A.unet_layouts.attn2_sites(layout)) == sorted(s.key for s in host)


@pytest.mark.parametrize("layout,proj,tokens", [("sd15", "linear", 2), ("sdxl", "mlp", 4), ("sdxl", "linear", 1)])
def test_spec_is_inferred_from_shapes_and_pickle_loads_identically(tmp_path, layout, proj, tokens):
    st = tiny.write_adapter(tmp_path / "a.safetensors", layout, META, proj=proj, num_tokens=tokens)
    ad = A.IQAAdapter.load(st)
    spec = ad.spec
    assert (spec.proj_type, spec.num_tokens, spec.input_dim) == (proj, tokens, 2)
    assert spec.cross_dim == tiny.LAYOUTS[layout]["context_dim"]
    assert spec.family == layout and spec.num_layers == {"sd15": 16, "sdxl": 70}[layout]
    assert ad.metadata.metrics == ("topiq_nr", "laion_aes") and ad.metadata.source.startswith("the safetensors header")

    flat = load_file(str(st))
    nested = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        nested[head][rest] = v
    pt = tmp_path / "a.bin"
    torch.save(nested, pt)
    (tmp_path / "a.json").write_text(json.dumps(META))  # sidecar: pickles have no header
    ad2 = A.IQAAdapter.load(pt)
    assert ad2.spec == spec and ad2.metadata.source == "sidecar a.json"
    vec = torch.randn(3, 2)
    assert torch.equal(ad.tokens(vec), ad2.tokens(vec))
    kv1, kv2 = ad.layer_kv(ad.tokens(vec)), ad2.layer_kv(ad2.tokens(vec))
    assert all(torch.equal(a, b) for a, b in zip(kv1.keys + kv1.values, kv2.keys + kv2.values))


def test_metadata_sources_in_order_and_override_merges(tmp_path, monkeypatch):
    st = tiny.write_adapter(tmp_path / "m.safetensors", "sd15", None, input_dim=3)
    (tmp_path / "m.json").write_text(json.dumps({"metrics": ["musiq", "liqe"], "use_flag": True}))
    assert A.resolve_metadata(st).metrics == ("musiq", "liqe")
    meta = A.resolve_metadata(st, {"metrics": ["topiq_nr", "musiq"]})
    assert meta.metrics == ("topiq_nr", "musiq") and meta.use_flag is True and "override" in meta.source
    (tmp_path / "m.json").unlink()
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"files": {"m.safetensors": {"metrics": ["arniqa"], "use_flag": True, "pos_encode_L": 1}}})
    )
    monkeypatch.setattr(A.metadata, "MANIFEST", manifest)
    assert A.resolve_metadata(st).metrics == ("arniqa",)


def test_missing_metadata_says_where_to_put_it(tmp_path):
    st = tiny.write_adapter(tmp_path / "bare.safetensors", "sd15", None, input_dim=2)
    with pytest.raises(Err, match="No metadata for bare.safetensors.*bare.json"):
        A.IQAAdapter.load(st)


def test_metadata_that_disagrees_with_input_dim_suggests_the_fit(tmp_path):
    st = tiny.write_adapter(tmp_path / "d.safetensors", "sd15", None, input_dim=3)
    with pytest.raises(
        Err, match=r"into 2 values, but the checkpoint's projection takes 3.*use_flag=true, pos_encode_L=0"
    ):
        A.IQAAdapter.load(st, {"metrics": ["topiq_nr", "laion_aes"]})


@pytest.mark.parametrize(
    "bad,match",
    [
        ('{"metrics": ["topiq_nrr"]}', "unknown metric 'topiq_nrr'.*Did you mean topiq_nr"),
        ('{"metrics": ["topiq_nr"], "pos_encode_L": -1}', "pos_encode_L"),
        ('{"metrics": ["topiq_nr"], "use_flag": "yes"}', "use_flag"),
        ('{"metrics": ["topiq_nr"], "colour": 1}', "unknown fields"),
        ("[1, 2]", "must be a JSON object"),
        ('{"metrics": ', "not valid JSON"),
        ('{"comment": "' + "x" * 70000 + '"}', "over 64 KiB"),
    ],
)
def test_bad_metadata_is_named(tmp_path, bad, match):
    st = tiny.write_adapter(tmp_path / "b.safetensors", "sd15", None, input_dim=1)
    (tmp_path / "b.json").write_text(bad)
    with pytest.raises(Err, match=match):
        A.IQAAdapter.load(st)


def test_norm_table_matches_the_shared_figures():
    if not SHARED_CSV.is_file():
        pytest.skip(f"reference CSV not beside the checkout ({SHARED_CSV}); CI always has it")
    table = A.default_norm_table()
    rows = {r["metric"]: r for r in csv.DictReader(SHARED_CSV.open())}
    raw = [m for m in rows if not m.endswith("_normalized")]
    assert sorted(raw) == table.names() and len(raw) == 21
    for m in raw:
        st, r, rn = table.get(m), rows[m], rows[m + "_normalized"]
        for q in (1, 5, 10, 25, 50, 75, 90, 95, 99):
            assert st.raw_from_percentile(q) == pytest.approx(float(r[f"quantile_{q}"]))
            assert st.z_from_percentile(q) == pytest.approx(float(rn[f"quantile_{q}"]), abs=2e-3)
    assert table.get("topiq_nr").z_from_percentile(99) == pytest.approx(2.011, abs=1e-3)


def test_percentiles_are_quality_percentiles_for_lower_is_better_metrics():
    """A table flagged lower_better (PIQE, NIQE; written by python -m training score) reads percentile p at raw
    percentile 100 - p: target 99 is a low raw score, i.e. high quality, and the score node reports it back."""
    doc = {
        "metrics": {
            m: {
                "mean": 50.0,
                "std": 20.0,
                "min": 0.0,
                "max": 100.0,
                "lower_better": lower,
                "percentiles": {str(p): float(p) for p in range(1, 100)},
            }
            for m, lower in (("piqe", True), ("topiq_nr", False))
        }
    }
    table = A.NormTable.from_dict(doc, "test")
    low, high = table.get("piqe"), table.get("topiq_nr")
    assert low.lower_better and not high.lower_better
    assert low.raw_from_percentile(99) == pytest.approx(1.0) and high.raw_from_percentile(99) == pytest.approx(99.0)
    assert low.raw_from_percentile(0) == 100.0 and low.raw_from_percentile(100) == 0.0
    assert low.percentile_from_raw(1.0) == pytest.approx(99.0) and low.percentile_from_raw(37.5) == pytest.approx(62.5)
    assert low.z_from_percentile(99) < low.z_from_percentile(1), "a high-quality target is a low (raw) z for PIQE"
    assert A.default_norm_table().get("topiq_nr").lower_better is False, "the CC3M metrics are all higher-better"


def test_percentile_raw_and_z_modes_agree():
    table = A.default_norm_table()
    st = table.get("topiq_nr")
    raw = st.raw_from_percentile(99)
    metrics = ("topiq_nr",)
    for mode, value in (("percentile", 99.0), ("raw", raw), ("z-score", st.z_from_raw(raw))):
        batch = A.build_targets(A.parse_targets(str(value), metrics), mode, metrics, True, table)
        assert batch.values.item() == pytest.approx(2.011, abs=1e-3)
    raw_batch = A.build_targets(A.parse_targets("99", metrics), "percentile", metrics, False, table)
    assert raw_batch.values.item() == pytest.approx(0.7479, abs=1e-4)
    assert st.raw_from_percentile(62.5) == pytest.approx(
        (float(st.raw_from_percentile(50)) + st.raw_from_percentile(75)) / 2
    )
    assert st.percentile_from_raw(st.raw_from_percentile(37.0)) == pytest.approx(37.0)


def test_target_text_forms():
    m = ("topiq_nr", "laion_aes")
    assert A.parse_targets("1; 25\n99", m) == [
        {"topiq_nr": 1, "laion_aes": 1},
        {"topiq_nr": 25, "laion_aes": 25},
        {"topiq_nr": 99, "laion_aes": 99},
    ]
    assert A.parse_targets("laion_aes=10, topiq_nr=90", m) == [{"topiq_nr": 90, "laion_aes": 10}]


@pytest.mark.parametrize(
    "text,mode,match",
    [
        ("150", "percentile", "outside 0-100"),
        ("-1", "percentile", "outside 0-100"),
        ("nan", "z-score", "finite"),
        ("inf", "raw", "finite"),
        ("40", "z-score", "far outside the training data"),
        ("", "percentile", "No targets"),
        ("abc", "percentile", "not a number"),
        ("musiq=5", "percentile", "trained on topiq_nr, laion_aes"),
        ("topiq_nr=5", "percentile", "no value for laion_aes"),
        ("99,", "percentile", r"'99,'.*remove the trailing or doubled comma"),
        ("topiq_nr=99, laion_aes=90,", "percentile", "remove the trailing or doubled comma"),
        ("topiq_nr=99,, laion_aes=90", "percentile", "remove the trailing or doubled comma"),
        ("1, 25, 50", "percentile", "separate them with ';'"),
        ("99\n" * 4097, "percentile", "4097 target lines.*at most 4096"),
    ],
)
def test_bad_targets_are_named(text, mode, match):
    m = ("topiq_nr", "laion_aes")
    with pytest.raises(Err, match=match):
        A.build_targets(A.parse_targets(text, m), mode, m, True, A.default_norm_table())


@pytest.mark.parametrize("use_flag,L", [(False, 0), (True, 0), (False, 10), (True, 3)])
def test_encoding_follows_the_training_script(use_flag, L):
    z = torch.tensor([[0.3, -1.2], [2.0, 0.0]])
    enc = A.encoding.encode_quality_vector(z, use_flag, L)
    assert enc.shape[1] == A.encoding.encoded_dim(2, use_flag, L)
    torch.testing.assert_close(enc, ref_encode(z, use_flag, L))


def _lora_like(path):
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 8),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(8, 4),
        },
        str(path),
    )


def _random_tensors(path):
    save_file({"weight": torch.randn(3, 3), "bias": torch.randn(3)}, str(path))


def _truncated(path):
    tiny.write_adapter(path, "sd15", META)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_pickle(path):
    path.write_bytes(b"this is not a checkpoint at all" * 10)


class _Evil:
    def __reduce__(self):
        return (print, ("pickles must never run code",))


def _unsafe_pickle(path):
    torch.save({"image_proj": _Evil(), "ip_adapter": {}}, str(path))


@pytest.mark.parametrize(
    "make,suffix,match",
    [
        (_lora_like, ".safetensors", "not an IQA-Adapter.*LoRA"),
        (_random_tensors, ".safetensors", "not an IQA-Adapter"),
        (_truncated, ".safetensors", "truncated, corrupt or not a checkpoint"),
        (lambda p: p.write_bytes(b""), ".safetensors", "empty"),
        (_garbage_pickle, ".bin", "truncated, corrupt or not a checkpoint"),
        (_unsafe_pickle, ".pt", "truncated, corrupt or not a checkpoint"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, make, suffix, match):
    path = tmp_path / f"bad{suffix}"
    make(path)
    (tmp_path / "bad.json").write_text(json.dumps(META))
    with pytest.raises(Err, match=match):
        A.IQAAdapter.load(path)


def test_model_mismatch_raises_before_anything_is_patched(tmp_path):
    adapter = A.IQAAdapter.load(tiny.write_adapter(tmp_path / "sd15.safetensors", "sd15", META))
    model = tiny.tiny_model("sdxl")
    before = repr(model.model_options)
    with pytest.raises(Err, match="trained for SD1.5.*model is SDXL"):
        pack.nodes.quality_condition.QualityCondition().apply(
            model, adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5
        )
    assert repr(model.model_options) == before


def test_targets_from_reference_scores():
    m = ("topiq_nr", "laion_aes")
    items = A.items_from_scores({"topiq_nr": [0.7, 0.4], "laion_aes": [5.5], "musiq": [50.0]}, m)
    assert items == [{"topiq_nr": 0.7, "laion_aes": 5.5}, {"topiq_nr": 0.4, "laion_aes": 5.5}]
    batch = A.build_targets(items, "raw", m, True, A.default_norm_table())
    assert batch.values[0, 0].item() == pytest.approx(A.default_norm_table().get("topiq_nr").z_from_raw(0.7))
    with pytest.raises(Err, match="no scores for laion_aes.*chained through previous_scores"):
        A.items_from_scores({"topiq_nr": [0.7]}, m)
    with pytest.raises(Err, match="finite"):
        A.items_from_scores({"topiq_nr": [float("nan")], "laion_aes": [5.0]}, m)


def test_as_many_target_lines_as_the_largest_batch_are_accepted():
    assert len(A.parse_targets("99\n" * A.MAX_TARGET_ITEMS, ("piqe",))) == A.MAX_TARGET_ITEMS


def test_too_many_target_lines_are_refused_before_any_is_parsed(monkeypatch):
    """The limit comes first: not one line is turned into a number, let alone K/V."""
    parsed = []
    monkeypatch.setattr(A.targets, "_number", lambda v, where: parsed.append(v) or 0.0)
    with pytest.raises(Err, match="at most 4096"):
        A.parse_targets("99\n" * 20000, ("piqe",))
    assert parsed == []


def test_too_many_reference_images_are_refused():
    with pytest.raises(Err, match="4097 reference images"):
        A.items_from_scores({"piqe": [50.0] * 4097}, ("piqe",))


@pytest.mark.parametrize(
    "text,key",
    [
        ('{"metrics": ["topiq_nr"], "metrics": ["laion_aes", "topiq_nr"]}', "metrics"),
        ('{"metrics": ["topiq_nr"], "embedding": {"spec": "a", "spec": "b"}}', "spec"),
    ],
)
def test_a_json_key_written_twice_is_refused_by_name(tmp_path, text, key):
    st = tiny.write_adapter(tmp_path / "d.safetensors", "sd15", None, input_dim=1)
    (tmp_path / "d.json").write_text(text)
    with pytest.raises(Err, match=f"sidecar d.json writes the key '{key}' twice"):
        A.IQAAdapter.load(st)
    with pytest.raises(Err, match=f"metadata_override writes the key '{key}' twice"):
        A.metadata.parse_json_text(text, "metadata_override")


def _without_layers(tmp_path, layout: str, layers: list[int]) -> Path:
    sd = tiny.adapter_state(layout, 2)
    drop = {f"ip_adapter.{2 * n + 1}.to_{kv}_ip.weight" for n in layers for kv in "kv"}
    path = tmp_path / f"{layout}_gap.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items() if k not in drop}, str(path), {"iqa_adapter": json.dumps(META)})
    return path


@pytest.mark.parametrize(
    "layout,layers,match",
    [
        (
            "sd15",
            [7],
            r"SD1\.5 layout's, which has 16 .* ip_adapter\.1 to ip_adapter\.31 .*layer\(s\) 7 \(ip_adapter\.15",
        ),
        ("sd15", [15], r"SD1\.5 layout's.*ip_adapter\.31\b.*layer\(s\) 15 \(ip_adapter\.31:"),
        ("sdxl", [69], r"SDXL layout's, which has 70 .*ip_adapter\.139 .*layer\(s\) 69 \(ip_adapter\.139:"),
        ("sdxl", [0, 34], r"SDXL layout's.*layer\(s\) 0, 34 \(ip_adapter\.1, ip_adapter\.69:"),
    ],
)
def test_missing_layers_are_named_against_the_family_layout_at_load(tmp_path, layout, layers, match):
    """The range comes from adapter/unet_layouts.py, not from the keys found; a missing last layer is
    caught at load, not blamed on the base model later."""
    with pytest.raises(Err, match=match):
        A.IQAAdapter.load(_without_layers(tmp_path, layout, layers))


def test_a_gap_in_a_file_of_no_known_layout_names_the_missing_key(tmp_path):
    """Four equal-width layers (the toy's shape) with the second removed: no family, the gap is still named."""
    sd = {k: v for k, v in tiny.adapter_state("sd15", 2).items() if not k.startswith("ip_adapter.")}
    width = sd["image_proj.norm.weight"].shape[0]
    for k in (1, 5, 7):
        for kv in "kv":
            sd[f"ip_adapter.{k}.to_{kv}_ip.weight"] = torch.randn(32, width)
    path = tmp_path / "toyish.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), {"iqa_adapter": json.dumps(META)})
    with pytest.raises(Err, match=r"no gap \(SD1\.5 1\.\.31, SDXL 1\.\.139\).*layer\(s\) 1 \(ip_adapter\.3:"):
        A.IQAAdapter.load(path)


def test_the_toy_adapter_of_no_known_layout_still_loads():
    toy = Path(__file__).resolve().parents[2] / "weights" / "toy" / "toy_adapter_quality.safetensors"
    assert A.IQAAdapter.load(toy).spec.num_layers == 5  # four UNet layers and the pixel refiner's
