"""Soak, isolation of state, and the network, through the real host's HTTP prompt queue.

One host process for the module, single-threaded like CI, with the network guard of tests/netguard (every
non-loopback connection or name lookup is refused and logged with its stack).

* Soak: 50 prompts with varied scales, targets, batch sizes, schedule windows, stacked conditions
  (two Quality Conditions, Quality Condition + Reference Quality Transfer) and gradient guidance. All
  complete; every repeat of a variant (same seed) gives the same images; resident memory after warm-up
  grows by less than 5%; a prompt without any node of this pack, queued after prompts with it, gives the
  plain model's output, and every prompt's plain branch passes a probe that fails on any leftover patch.
* Isolation: two prompts with different conditions queued back to back on one model, and two conditions
  on one model inside one prompt, each give the images of that condition run alone.
* Network: the guard saw no attempt from the host during all of the above; with allow_download on, the
  attempt is seen and refused (the guard works), and the error says to download by hand.
"""

from __future__ import annotations

import copy

import pytest
import reliability_host as rh

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROUNDS = 5
MEMORY_GROWTH_LIMIT = 0.05
SOAK = {}  # figures for the report: filled by test_soak, read by later tests


def qc_inputs(p: dict, node: str = "qc", **inputs) -> dict:
    p[node]["inputs"].update(inputs)
    return p


def stack_two(seed: int) -> dict:
    p = rh.graph(seed)
    p["adapter_b"] = {
        "class_type": "IQAAdapterLoader",
        "inputs": {"adapter_name": rh.QUALITY_B, "metadata_override": ""},
    }
    p["qc_b"] = {
        "class_type": "IQAQualityCondition",
        "inputs": dict(p["qc"]["inputs"], model=["qc", 0], iqa_adapter=["adapter_b", 0], targets="25", scale=0.7),
    }
    p["ks"]["inputs"]["model"] = ["qc_b", 0]
    return p


def stack_reference(seed: int) -> dict:
    p = rh.graph(seed)
    p["ref_adapter"] = {
        "class_type": "IQAAdapterLoader",
        "inputs": {"adapter_name": rh.REFERENCE, "metadata_override": ""},
    }
    p["ref_img"] = {
        "class_type": "IQARelOddImage",
        "inputs": {"kind": "rgb", "width": 64, "height": 64, "seed": 9, "batch": 1},
    }
    p["ref_iqa"] = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "topiq_nr"}}
    p["rqt"] = {
        "class_type": "IQAReferenceQualityTransfer",
        "inputs": {
            "model": ["qc", 0],
            "iqa_adapter": ["ref_adapter", 0],
            "reference": ["ref_img", 0],
            "iqa_model": ["ref_iqa", 0],
            "scale": 0.8,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    p["ks"]["inputs"]["model"] = ["rqt", 0]
    return p


def guided(seed: int, on: str = "qc", **gg) -> dict:
    p = rh.graph(seed)
    p["vae"] = {"class_type": "IQATestTinyVAE", "inputs": {"seed": 5}}
    p["gg_iqa"] = {"class_type": "IQATestRandomIQAModel", "inputs": {"metric": "cnniqa"}}
    p["gg"] = {
        "class_type": "IQAGradientGuidance",
        "inputs": dict(
            {
                "model": [on, 0],
                "iqa_model": ["gg_iqa", 0],
                "vae": ["vae", 0],
                "scale": 0.2,
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


def scored(seed: int) -> dict:
    """A quality sweep over a batch of 3, each image scored (PIQE), the plot previewed."""
    p = qc_inputs(rh.graph(seed, batch=3), targets="1; 50; 99")
    p["iqa"] = {"class_type": "IQALoadModel", "inputs": {"metric": "piqe", "allow_download": False, "device": "cpu"}}
    p["score"] = {"class_type": "IQAScore", "inputs": {"image": ["img", 0], "iqa_model": ["iqa", 0], "batch_size": 2}}
    p["plot"] = {"class_type": "PreviewImage", "inputs": {"images": ["score", 4]}}
    return p


VARIANTS = {
    "p99": lambda s: rh.graph(s),
    "low_strong": lambda s: qc_inputs(rh.graph(s), targets="1", scale=1.5),
    "sweep_scored_b3": scored,
    "zscores_b2": lambda s: qc_inputs(rh.graph(s, batch=2), targets="-1; 2", target_mode="z-score", scale=0.5),
    "window_negative": lambda s: qc_inputs(rh.graph(s), start_percent=0.2, end_percent=0.8, uncond="negative quality"),
    "stack_two_adapters": stack_two,
    "stack_reference": stack_reference,
    "guided": guided,
    "guided_target_z_plain": lambda s: guided(
        s, on="probe", direction="target z-score", target_z=-1.0, every_n_steps=2
    ),
}
PLAIN = "plain_only"


def schedule() -> list[str]:
    """50 prompts: the plain graph first (before any adapter) and last, the variants in rotating order."""
    names = list(VARIANTS)
    seq = [PLAIN]
    for r in range(ROUNDS):
        k = (3 * r) % len(names)
        seq += names[k:] + names[:k]
        if 0 < r < ROUNDS - 1:
            seq.append(PLAIN)
    return seq + [PLAIN]


def build(name: str) -> dict:
    seed = 300 + (sorted(VARIANTS).index(name) if name != PLAIN else 99)
    return rh.plain_only(rh.graph(seed)) if name == PLAIN else VARIANTS[name](seed)


def run(host: rh.Host, prompt: dict, files: set | None = None) -> dict[str, list[str]]:
    """Digests of the images each output node saved (and the text of nodes that show some). With `files`,
    every image must be a new file, not a cached answer from an earlier prompt; they are added to it."""
    entry = host.wait(host.queue(prompt), timeout=300, poll=0.05)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = host.output_images(entry)
    if files is not None:
        new = {str(p) for v in images.values() for p in v}
        assert new and not new & files, "the host answered from its cache: the prompt did not run again"
        files |= new
    return {k: [rh.image_digest(p) for p in v] for k, v in images.items()} | {
        f"{k}.text": v["text"] for k, v in (entry.get("outputs") or {}).items() if "text" in v
    }


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    rh.prepare_workspace(root)
    with rh.running_hosts(root) as (h,):
        yield h


def test_soak(host):
    seq = schedule()
    assert (
        len(seq) == 50
        and seq[0] == seq[-1] == PLAIN
        and {n: seq.count(n) for n in VARIANTS} == dict.fromkeys(VARIANTS, ROUNDS)
    )
    warm_up = len(VARIANTS) + 1  # every variant once: every code path and cache has been used
    results: dict[str, list[dict]] = {}
    rss, files = [], set()
    for name in seq:
        results.setdefault(name, []).append(run(host, build(name), files))
        rss.append(host.rss())
    for name, outs in results.items():
        assert all(o == outs[0] for o in outs), f"{name}: the same prompt gave different outputs across the soak"
        images = [d for k, v in outs[0].items() if not k.endswith(".text") for d in v]
        assert images and len(set(images)) == len(images) or name == PLAIN, (
            f"{name}: degenerate (identical) images {images}"
        )
    assert results[PLAIN][0] == results[PLAIN][-1], "the plain model changed after prompts with the adapter"
    assert len(results["sweep_scored_b3"][0]["save"]) == 3 and len(results["zscores_b2"][0]["save"]) == 2
    for name in VARIANTS:  # the condition changed the picture: every variant differs from its own plain branch
        out = results[name][0]
        assert not set(out["save"]) & set(out["save_plain"]), name
    growth = (rss[-1] - rss[warm_up - 1]) / rss[warm_up - 1]
    SOAK.update(
        prompts=len(seq),
        rss_warm_mb=rss[warm_up - 1] / 2**20,
        rss_end_mb=rss[-1] / 2**20,
        growth=growth,
        rss_max_mb=max(rss[warm_up - 1 :]) / 2**20,
    )
    print(
        f"soak: {len(seq)} prompts, RSS after warm-up {SOAK['rss_warm_mb']:.0f} MiB, at the end {SOAK['rss_end_mb']:.0f} MiB "
        f"({100 * growth:+.2f}%), peak after warm-up {SOAK['rss_max_mb']:.0f} MiB"
    )
    assert growth < MEMORY_GROWTH_LIMIT, SOAK


def two_conditions_in_one_prompt(seed: int) -> dict:
    p = qc_inputs(rh.graph(seed), targets="1")
    p["qc2"] = {"class_type": "IQAQualityCondition", "inputs": dict(p["qc"]["inputs"], targets="99")}
    p["ks2"] = {"class_type": "KSampler", "inputs": dict(p["ks"]["inputs"], model=["qc2", 0])}
    p["img2"] = {"class_type": "IQATestLatentToImage", "inputs": {"samples": ["ks2", 0]}}
    p["save2"] = {"class_type": "SaveImage", "inputs": {"images": ["img2", 0], "filename_prefix": "rel2"}}
    return p


def test_conditions_queued_back_to_back_each_get_their_own(host):
    seed = 4242
    low, high = qc_inputs(rh.graph(seed), targets="1"), qc_inputs(rh.graph(seed), targets="99")
    alone_low, alone_high = run(host, low)["save"], run(host, high)["save"]
    assert alone_low != alone_high, "the two conditions must differ for this test to mean anything"
    # Queued without waiting: the host holds both at once and runs them one after the other.
    ids = [host.queue(copy.deepcopy(low)), host.queue(copy.deepcopy(high)), host.queue(copy.deepcopy(low))]
    got = []
    for pid in ids:
        entry = host.wait(pid, timeout=300, poll=0.05)
        assert entry["status"]["status_str"] == "success"
        got.append([rh.image_digest(p) for p in host.output_images(entry).get("save", [])])
    # The third prompt repeats the first: the host may answer it from its cache (no new image), else it matches.
    assert got[0] == alone_low and got[1] == alone_high and got[2] in ([], alone_low)
    both = run(host, two_conditions_in_one_prompt(seed))
    assert both["save"] == alone_low and both["save2"] == alone_high, "two conditions on one model in one prompt mixed"


def test_no_network_attempt_and_the_guard_sees_one(host):
    assert host.network_attempts() == [], "the host tried to reach the network during the soak"
    prompt = {
        "iqa": {"class_type": "IQALoadModel", "inputs": {"metric": "musiq", "allow_download": True, "device": "cpu"}},
        "img": {
            "class_type": "IQARelOddImage",
            "inputs": {"kind": "rgb", "width": 64, "height": 64, "seed": 1, "batch": 1},
        },
        "score": {"class_type": "IQAScore", "inputs": {"image": ["img", 0], "iqa_model": ["iqa", 0], "batch_size": 1}},
        "plot": {"class_type": "PreviewImage", "inputs": {"images": ["score", 4]}},
    }
    with pytest.raises(rh.PromptFailed) as info:
        host.wait(host.queue(prompt), timeout=120, poll=0.05)
    assert "download it by hand" in info.value.error["exception_message"].lower()
    attempts = host.network_attempts()
    assert attempts, "allow_download is on: the download is attempted, and the guard must see it"
    assert all(a["host"] not in ("127.0.0.1", "localhost") for a in attempts)
    assert any(rh.pack_frames(a["stack"]) for a in attempts), "the attempt came from the pack's opt-in download path"
    assert host.alive()
