"""Reference Quality Transfer on the real host: one-to-one and broadcast references, sampling, bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import UNET_REL_TOL, assert_relatively_close, inputs, pack, random_iqa, relative_error, run_unet, tiny
from host_run import execute, reference_transfer_graph, sampling_graph

A = pack.adapter
RQT = pack.nodes.reference_transfer.ReferenceQualityTransfer
REF_META = {"kind": "reference", "embedding": {"spec": "topiq_nr_resnet50_meanstd"}}


@pytest.fixture(scope="module")
def ref_adapter(adapter_dir):
    tiny.write_adapter(adapter_dir / "ref_sd15.safetensors", "sd15", REF_META, input_dim=7680)
    return A.IQAAdapter.load(adapter_dir / "ref_sd15.safetensors")


@pytest.fixture(scope="module")
def topiq():
    return random_iqa.load_random_iqa_model("topiq_nr")


def refs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, 80, 3, generator=g)


def transfer(model, adapter, reference, iqa, scale=1.0):
    return RQT().apply(model, adapter, reference, iqa, scale, 0.0, 1.0)[0]


def test_reference_batch_maps_one_to_one_or_broadcasts(ref_adapter, topiq):
    model = tiny.tiny_model("sd15")
    x1, c1 = inputs("sd15", 1)
    x, ctx = x1.repeat(2, 1, 1, 1), c1.repeat(2, 1, 1)
    two = refs(2)
    paired = run_unet(transfer(model, ref_adapter, two, topiq), x, ctx)
    assert (paired[0] - paired[1]).abs().max() > 1e-4
    first_only = run_unet(transfer(model, ref_adapter, two[:1], topiq), x, ctx)
    # One reference applies to every latent. Rows of one batch may go through different GEMM tiles, and the
    # paired run embeds its references as a batch of two (other conv shapes than one alone): rounding-level
    # differences, compared by norm (helpers.UNET_REL_TOL); another reference moves the output 5e-2 of its norm.
    assert_relatively_close(first_only[1], first_only[0], what="one reference, latents 1 and 2")
    assert_relatively_close(first_only[0], paired[0], what="reference 1 alone vs in a batch of two")
    with pytest.raises(A.IQAAdapterError, match="3 references but the latent batch is 2"):
        run_unet(transfer(model, ref_adapter, refs(3), topiq), x, ctx)
    assert not torch.equal(run_unet(model, x, ctx), paired)


def test_uses_the_same_attention_patch_with_zero_uncond(ref_adapter, topiq):
    patched = transfer(tiny.tiny_model("sd15"), ref_adapter, refs(1), topiq)
    patches = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert all(type(p) is A.DecoupledCrossAttention for p in patches.values())
    tokens = next(iter(patches.values())).contributions[0][0]
    zero_tokens = ref_adapter.tokens(torch.zeros(1, 7680))
    torch.testing.assert_close(tokens.uncond.keys[0], ref_adapter.layer_kv(zero_tokens).keys[0])


def test_wrong_adapter_kinds_and_metrics_are_named(ref_adapter, topiq, adapter_dir):
    score_path = tiny.write_adapter(adapter_dir / "score_for_rqt.safetensors", "sd15", {"metrics": ["topiq_nr"]})
    score_adapter = A.IQAAdapter.load(score_path)
    model = tiny.tiny_model("sd15")
    with pytest.raises(A.IQAAdapterError, match="score-based adapter; use it with Quality Condition"):
        transfer(model, score_adapter, refs(1), topiq)
    with pytest.raises(A.IQAAdapterError, match="reference adapter; use it with Reference Quality Transfer"):
        pack.nodes.quality_condition.QualityCondition().apply(
            model, ref_adapter, "99", "percentile", 1.0, 0.0, 1.0, "zeros", 0.5
        )
    musiq = random_iqa.load_random_iqa_model("musiq")
    with pytest.raises(A.IQAAdapterError, match="taps 'topiq_nr', but the IQA model given is 'musiq'"):
        transfer(model, ref_adapter, refs(1), musiq)
    with pytest.raises(A.IQAAdapterError, match="at least 32 px"):
        transfer(model, ref_adapter, torch.rand(1, 20, 64, 3), topiq)


def test_full_sampling_run_through_the_executor(ref_adapter, host_clone):
    graph = reference_transfer_graph(
        "sd15",
        "ref_sd15.safetensors",
        {"class_type": "IQATestPatternImage", "inputs": {"width": 96, "height": 64, "seed": 5}},
        {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "topiq_nr"}},
        batch=2,
    )
    run = execute(graph)
    assert run.ok, run.error_message
    plain = execute(sampling_graph("sd15", None, batch=2))
    out = run.output("image")
    assert out.shape == (2, 64, 64, 3) and (out - plain.output("image")).abs().max() > 1e-3


def test_quality_matching_takes_targets_from_a_reference_score(adapter_dir):
    """IQA Score -> iqa_scores -> Quality Condition.reference_scores: targets are the reference's raw scores."""
    tiny.write_adapter(adapter_dir / "match_sd15.safetensors", "sd15", {"metrics": ["topiq_nr"], "use_flag": True})
    graph = sampling_graph("sd15", "match_sd15.safetensors", targets="1", batch=1)
    graph["ref_img"] = {"class_type": "IQATestPatternImage", "inputs": {"width": 96, "height": 96, "seed": 2}}
    graph["iqa"] = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "topiq_nr"}}
    graph["score"] = {
        "class_type": "IQAScore",
        "inputs": {"image": ["ref_img", 0], "iqa_model": ["iqa", 0], "batch_size": 1},
    }
    graph["qc"]["inputs"]["reference_scores"] = ["score", 5]
    run = execute(graph)
    assert run.ok, run.error_message
    scored = run.executor.outputs["score"][5][0]
    raw = scored["topiq_nr"][0]
    # The same graph with the score typed in as a raw target gives the same image.
    typed = sampling_graph("sd15", "match_sd15.safetensors", targets=repr(raw), mode="raw", batch=1)
    # Bitwise: repr() round-trips the float, so both graphs sample with the same targets, code and shapes.
    assert torch.equal(execute(typed).output("image"), run.output("image"))
    assert not torch.equal(
        execute(sampling_graph("sd15", "match_sd15.safetensors", targets="1", batch=1)).output("image"),
        run.output("image"),
    )


def test_block_weights_take_the_same_path_as_in_quality_condition(ref_adapter, topiq):
    model = tiny.tiny_model("sd15")
    x, ctx = inputs("sd15", 1)
    reference = refs(1)
    full = RQT().apply(model, ref_adapter, reference, topiq, 1.0, 0.0, 1.0)[0]
    ones = RQT().apply(model, ref_adapter, reference, topiq, 1.0, 0.0, 1.0, block_weights="all: 1")[0]
    assert torch.equal(run_unet(ones, x, ctx), run_unet(full, x, ctx))
    off = RQT().apply(model, ref_adapter, reference, topiq, 1.0, 0.0, 1.0, block_weights="all: 0")[0]
    assert torch.equal(run_unet(off, x, ctx), run_unet(model, x, ctx))
    out_only = RQT().apply(model, ref_adapter, reference, topiq, 1.0, 0.0, 1.0, block_weights="input: 0, middle: 0")[0]
    assert sorted(out_only.model_options["transformer_options"]["patches_replace"]["attn2"]) == [
        ("output", i, 0) for i in range(3, 12)
    ]
    with pytest.raises(A.IQAAdapterError, match=r"block_weights: unknown block 'mid'"):
        RQT().apply(model, ref_adapter, reference, topiq, 1.0, 0.0, 1.0, block_weights="mid: 1")


def test_two_transfers_and_a_quality_condition_stack(ref_adapter, topiq, adapter_dir):
    """Each node adds its own term to the same attn2 patch (adapter/patching.py), so two transfers of one
    reference at scale 1 are one at scale 2, and a Quality Condition and a transfer commute. Compared by norm:
    the sums run in another order (helpers.UNET_REL_TOL); the controls move the output by far more."""
    model = tiny.tiny_model("sd15")
    x, ctx = inputs("sd15", 1)
    reference = refs(1)
    once = transfer(model, ref_adapter, reference, topiq, scale=1.0)
    twice = transfer(once, ref_adapter, reference, topiq, scale=1.0)
    patches = twice.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert all(len(p.contributions) == 2 for p in patches.values())
    doubled = run_unet(transfer(model, ref_adapter, reference, topiq, scale=2.0), x, ctx)
    assert_relatively_close(run_unet(twice, x, ctx), doubled, what="two transfers at 1 vs one at 2")
    assert relative_error(run_unet(once, x, ctx), doubled) > 100 * UNET_REL_TOL  # the second term counts

    score = A.IQAAdapter.load(
        tiny.write_adapter(adapter_dir / "score_stack.safetensors", "sd15", {"metrics": ["topiq_nr"]})
    )
    qc = pack.nodes.quality_condition.QualityCondition()
    condition_first = transfer(
        qc.apply(model, score, "1.0", "z-score", 1.0, 0.0, 1.0, "zeros", 0.5)[0], ref_adapter, reference, topiq
    )
    transfer_first = qc.apply(once, score, "1.0", "z-score", 1.0, 0.0, 1.0, "zeros", 0.5)[0]
    both = run_unet(transfer_first, x, ctx)
    assert_relatively_close(run_unet(condition_first, x, ctx), both, what="condition then transfer, and reverse")
    assert relative_error(run_unet(once, x, ctx), both) > 100 * UNET_REL_TOL


def test_two_transfers_in_one_graph_run_through_the_executor(ref_adapter, host_clone):
    """A second Reference Quality Transfer, of another reference, reads the first one's model."""
    pattern = {"class_type": "IQATestPatternImage", "inputs": {"width": 96, "height": 64, "seed": 5}}
    iqa = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "topiq_nr"}}
    one = reference_transfer_graph("sd15", "ref_sd15.safetensors", pattern, iqa)
    two = reference_transfer_graph("sd15", "ref_sd15.safetensors", pattern, iqa)
    two["ref_img2"] = {"class_type": "IQATestPatternImage", "inputs": {"width": 64, "height": 64, "seed": 9}}
    two["rqt2"] = {**two["rqt"], "inputs": {**two["rqt"]["inputs"], "model": ["rqt", 0], "reference": ["ref_img2", 0]}}
    two["sampler"]["inputs"]["model"] = ["rqt2", 0]
    run_one, run_two = execute(one), execute(two)
    assert run_one.ok and run_two.ok, (run_one.error_message, run_two.error_message)
    assert (run_two.output("image") - run_one.output("image")).abs().max() > 1e-3
