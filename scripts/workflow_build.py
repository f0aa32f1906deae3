"""Author the example workflows: UI-format JSON in example_workflows/ (what the editor loads and the
template browser lists, named by its title: scripts/workflow_titles.py) and the API-format twin of each in
scripts/prompts/<slug>.json (what POST /prompt takes), all derived from one description per workflow below.
The .jpg thumbnails beside the examples (same name) are editor screenshots, written by the browser tests
(IQA_WRITE_THUMBNAILS=1 scripts/test_upstream.sh tests/workflows/test_browser.py).

    scripts/demo.sh ... is the user-facing command; this one is for maintainers:
    .venv/bin/python scripts/workflow_build.py            # check: report what would change
    .venv/bin/python scripts/workflow_build.py --write    # rewrite the files

It loads the real host's node definitions in-process (workflow_docs.local_object_info, the same data as
/object_info), so widget order and slots match the running host.
A workflow whose nodes the host does not have yet is skipped and reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Mapping

from workflow_graph import Graph  # noqa: E402
from workflow_titles import TITLES, example_path, locale_messages, unsafe_characters  # noqa: E402
from workflow_to_api import convert  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_workflows"  # <title>.json, <title>.jpg (workflow_titles.example_path)
PROMPTS = REPO / "scripts" / "prompts"

# File names the example graphs point at. The official IQA-Adapter weights are published under
# undocumented names, so these are this pack's suggested names (README, "Weights").
CHECKPOINT = "sd_xl_base_1.0.safetensors"
QUALITY_ADAPTER = "iqa_adapter_sdxl_topiq_laion.safetensors"
REFERENCE_ADAPTER = "iqa_adapter_sdxl_reference_topiq.safetensors"
GUIDANCE_VAE = "taesdxl"
# GenzIQA reads the model it was trained on: the authors used SD 2.1-base (its single-file name on Hugging
# Face). No trained GenzIQA file is published; this is the pack's suggested name (docs/genziqa.md).
GENZIQA_CHECKPOINT = "v2-1_512-ema-pruned.safetensors"
GENZIQA_FILE = "genziqa_sd21_base.safetensors"
# The model files each host folder must list for the examples to validate (the tests make empty stand-ins).
MODEL_FILES: dict[str, list[str]] = {
    "checkpoints": [CHECKPOINT, GENZIQA_CHECKPOINT],
    "vae_approx": [f"{GUIDANCE_VAE}_encoder.safetensors", f"{GUIDANCE_VAE}_decoder.safetensors"],
    "iqa_adapter": [QUALITY_ADAPTER, REFERENCE_ADAPTER],
    "genziqa": [GENZIQA_FILE],
}
PROMPT = "a photo of a lighthouse on a rocky cliff at sunset, waves, seagulls"
SEED = 42
PACK = "purple"  # colour of this pack's nodes


# Layout columns (editor coordinates) shared by the examples. Column a is 460 wide: Load IQA-Adapter's file
# names (about 40 characters) then leave room for the widget's label.
COL = {"a": 40, "b": 540, "c": 1000, "d": 1360, "e": 1680}
A_W = 460
# A group's top sits this far above its first node's top edge: room for the group title (24 px font) and, in
# the current editor, the node source badge drawn above a custom node's title bar. (Nodes above a Scores group
# end above its top, 650.)
GROUP_HEAD = 110


def _sdxl_base(g: Graph, batch: int = 1, width: int = 1024, height: int = 1024, top: float = 560, ckpt_y: float = 0):
    """Checkpoint, both prompts and the empty latent: the part every text-to-image example shares."""
    ckpt = g.add("CheckpointLoaderSimple", (COL["a"], ckpt_y or top), size=(A_W, 100), ckpt_name=CHECKPOINT)
    pos = g.add(
        "CLIPTextEncode",
        (COL["b"], top),
        size=(400, 200),
        title="Positive prompt",
        color="green",
        text=PROMPT,
        clip=ckpt.out("CLIP"),
    )
    neg = g.add(
        "CLIPTextEncode",
        (COL["b"], top + 260),
        size=(400, 200),
        title="Negative prompt",
        color="red",
        text="blurry, watermark",
        clip=ckpt.out("CLIP"),
    )
    latent = g.add("EmptyLatentImage", (COL["b"], top + 520), width=width, height=height, batch_size=batch)
    return ckpt, pos, neg, latent


def _sampler(g: Graph, xy, model, pos, neg, latent, title=None, denoise: float = 1.0):
    return g.add(
        "KSampler",
        xy,
        size=(315, 262),
        title=title,
        model=model,
        seed=SEED,
        steps=30,
        cfg=7.0,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent,
        denoise=denoise,
    )


def _sample_and_decode(g: Graph, conditioned, pos, neg, latent, ckpt):
    """KSampler on the conditioned model, then VAE Decode with the checkpoint's VAE: (sampler, image)."""
    sampler = _sampler(g, (COL["c"], 60), conditioned.out(0), pos, neg, latent.out(0))
    image = g.add("VAEDecode", (COL["d"], 60), size=(260, 50), samples=sampler.out(0), vae=ckpt.out("VAE"))
    return sampler, image


def _same_noise(g: Graph, latent):
    """Every item of the latent batch starts from the same initial noise, so that the items differ only by
    their targets (the paper's sweeps). Host node: with seed_behavior "fixed" it gives every item the first
    item's batch_index, and the host's KSampler then draws one noise tensor for the seed and repeats it."""
    return g.add(
        "LatentBatchSeedBehavior",
        (latent.pos[0], latent.pos[1] + 170),
        size=(400, 82),
        title="Same noise for every item",
        samples=latent.out(0),
        seed_behavior="fixed",
    )


def _quality_condition(g: Graph, xy, model, adapter, targets: str, title=None, **optional):
    """Quality Condition at the node's defaults (percentile targets, scale 1, the whole schedule, uncond zeros)."""
    return g.add(
        "IQAQualityCondition",
        xy,
        size=(400, 400),
        title=title,
        color=PACK,
        model=model,
        iqa_adapter=adapter,
        targets=targets,
        target_mode="percentile",
        scale=1.0,
        start_percent=0.0,
        end_percent=1.0,
        uncond="zeros",
        negative_strength=0.5,
        **optional,
    )


def _adapter_and_condition(g: Graph, model, targets: str, title=None, **optional):
    loader = g.add(
        "IQAAdapterLoader",
        (COL["a"], 60),
        size=(A_W, 130),
        color=PACK,
        adapter_name=QUALITY_ADAPTER,
        metadata_override="",
    )
    qc = _quality_condition(g, (COL["b"], 60), model, loader.out(0), targets, title, **optional)
    g.group("IQA-Adapter", (COL["a"] - 20, 60 - GROUP_HEAD, 960, 420 + GROUP_HEAD), color="#a1309b")
    return qc


def _score(g: Graph, xy, image, metric: str = "topiq_nr", iqa=None, title=None):
    """Load IQA Model (unless one is given) -> IQA Score on an IMAGE batch -> preview of the score plot. The
    preview is what makes the host run IQA Score (only output nodes and what they read are executed)."""
    if iqa is None:
        iqa = g.add("IQALoadModel", xy, size=(315, 110), color=PACK, metric=metric, allow_download=False, device="auto")
    score = g.add(
        "IQAScore",
        (xy[0] + 360, xy[1]),
        size=(315, 150),
        title=title,
        color=PACK,
        image=image.out(0),
        iqa_model=iqa.out(0),
    )
    g.add("PreviewImage", (xy[0] + 720, xy[1]), size=(420, 320), title="Score plot", images=score.out("plot"))
    return iqa


def _blurred(g: Graph, image, xy, title: str):
    """A strongly blurred copy of a Load Image's picture: the distortion the examples show IQA at work on."""
    return g.add("ImageBlur", xy, size=(400, 90), title=title, image=image.out("IMAGE"), blur_radius=9, sigma=4.0)


def quality_condition_t2i(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g)
    qc = _adapter_and_condition(g, ckpt.out("MODEL"), "99")
    sampler, image = _sample_and_decode(g, qc, pos, neg, latent, ckpt)
    g.add("SaveImage", (COL["e"], 60), size=(520, 580), images=image.out(0), filename_prefix="iqa_t2i_p99")
    g.note(
        (COL["c"], 400),
        "SDXL text-to-image with Quality Condition at a high target: percentile 99 of the CC3M "
        "training distribution for every metric of the adapter (the paper's 'high quality' setting). "
        "Put the SDXL checkpoint in models/checkpoints and the adapter in models/iqa_adapter.",
        size=(315, 180),
    )


def quality_sweep(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, batch=5)
    qc = _adapter_and_condition(g, ckpt.out("MODEL"), "1\n25\n50\n75\n99", title="Quality Condition (sweep p1..p99)")
    same = _same_noise(g, latent)
    sampler, image = _sample_and_decode(g, qc, pos, neg, same, ckpt)
    g.add(
        "SaveImage",
        (COL["e"], 60),
        title="Sweep p1 / p25 / p50 / p75 / p99 (the batch shows as a grid)",
        size=(640, 540),
        images=image.out(0),
        filename_prefix="iqa_sweep",
    )
    _score(g, (COL["c"], 760), image, "topiq_nr")
    g.note(
        (COL["c"], 400),
        "The paper's quality sweep: one prompt and one seed, five latents in one batch, each "
        "conditioned on its own target (one line per batch item: percentiles 1, 25, 50, 75, 99). Batch Latent Seed "
        "Behavior (fixed) gives all five the same initial noise, so they differ only by their targets. Quality should "
        "rise from the first image to the last; IQA Score measures it (scores, CC3M percentiles, a plot).",
        size=(315, 240),
    )
    g.group("Scores", (COL["c"] - 20, 760 - GROUP_HEAD, 1240, 360 + GROUP_HEAD), color="#3f789e")


def best_of_n(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, batch=8)
    qc = _adapter_and_condition(g, ckpt.out("MODEL"), "99", title="Quality Condition (p99 for all 8)")
    sampler, image = _sample_and_decode(g, qc, pos, neg, latent, ckpt)
    iqa = g.add(
        "IQALoadModel",
        (COL["c"], 760),
        size=(315, 110),
        color=PACK,
        metric="topiq_nr",
        allow_download=False,
        device="auto",
    )
    score = g.add(
        "IQAScore", (COL["c"] + 360, 760), size=(315, 150), color=PACK, image=image.out(0), iqa_model=iqa.out(0)
    )
    best = g.add(
        "IQABestOfN",
        (COL["c"] + 720, 760),
        size=(360, 330),
        title="Keep the best 2 of 8",
        color=PACK,
        images=image.out(0),
        iqa_scores=score.out("iqa_scores"),
        mode="best k",
        k=2,
        percentile=75.0,
        if_none_kept="error",
        latent=sampler.out(0),
        metric="",
        direction="auto",
    )
    g.add(
        "SaveImage",
        (COL["e"], 60),
        title="The best 2 (best first)",
        size=(640, 540),
        images=best.out("images"),
        filename_prefix="iqa_best_of_8",
    )
    g.add(
        "PreviewImage", (COL["c"] + 1120, 760), size=(420, 320), title="Score plot of all 8", images=score.out("plot")
    )
    g.note(
        (COL["c"], 400),
        "Generate 8 at percentile 99, keep the best 2: Quality Condition raises the quality of every image; IQA "
        "Score (TOPIQ) ranks them and IQA Best of N keeps the two best, with their batch indices, scores and "
        "matching latents (its latent output, for a second pass).",
        size=(315, 200),
    )
    g.group("Rank and keep", (COL["c"] - 20, 760 - GROUP_HEAD, 1600, 360 + GROUP_HEAD), color="#3f789e")


def _subject_mask(g: Graph, xy, width: int = 1024, height: int = 1024):
    """A soft-edged box in the middle of the image (the subject) and its inverse (the background), from the
    host's mask nodes: (subject, background)."""
    x, y = xy
    canvas = g.add("SolidMask", (x, y), size=(315, 110), title="Canvas (0)", value=0.0, width=width, height=height)
    box = g.add(
        "SolidMask",
        (x, y + 150),
        size=(315, 110),
        title="Subject box (1)",
        value=1.0,
        width=width // 2,
        height=height * 5 // 8,
    )
    placed = g.add(
        "MaskComposite",
        (x + 360, y),
        size=(315, 150),
        destination=canvas.out(0),
        source=box.out(0),
        x=width // 4,
        y=height * 3 // 16,
        operation="add",
    )
    subject = g.add(
        "FeatherMask",
        (x + 360, y + 190),
        size=(315, 150),
        title="Subject (feathered)",
        mask=placed.out(0),
        left=64,
        top=64,
        right=64,
        bottom=64,
    )
    background = g.add("InvertMask", (x + 720, y + 190), size=(240, 60), title="Background", mask=subject.out(0))
    g.group("Where", (x - 20, y - GROUP_HEAD, 1000, 300 + GROUP_HEAD), color="#3f789e")
    return subject, background


def regional_quality(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, top=1000)
    subject, background = _subject_mask(g, (COL["c"], 760))
    sharp = _adapter_and_condition(
        g, ckpt.out("MODEL"), "99", title="Quality Condition (subject: p99)", mask=subject.out(0)
    )
    soft = _quality_condition(
        g,
        (COL["b"], 520),
        sharp.out(0),
        sharp.values["iqa_adapter"],
        "5",
        title="Quality Condition (background: p5)",
        mask=background.out(0),
    )
    sampler, image = _sample_and_decode(g, soft, pos, neg, latent, ckpt)
    g.add("SaveImage", (COL["e"], 60), size=(520, 580), images=image.out(0), filename_prefix="iqa_regional")
    g.note(
        (COL["c"], 400),
        "Quality where you want it: two Quality Conditions from one adapter, each with a mask. The subject box "
        "(feathered) gets percentile 99, the rest of the image percentile 5, for a sharp subject on a degraded "
        "background; swap the targets for the reverse, or degrade one region to make training pairs. A mask of "
        "ones is the same as no mask; soft values weigh the term.",
        size=(315, 240),
    )


def block_weights(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, top=1000)
    every = _adapter_and_condition(g, ckpt.out("MODEL"), "99", title="Quality Condition (every block)")
    output = _quality_condition(
        g,
        (COL["b"], 520),
        ckpt.out("MODEL"),
        every.values["iqa_adapter"],
        "99",
        title="Quality Condition (output blocks only)",
        block_weights="input: 0, middle: 0, output: 1",
    )
    for y, model, label in ((60, every, "every_block"), (700, output, "output_blocks")):
        sampler = _sampler(g, (COL["c"], y), model.out(0), pos, neg, latent.out(0))
        image = g.add("VAEDecode", (COL["d"], y), size=(260, 50), samples=sampler.out(0), vae=ckpt.out("VAE"))
        g.add(
            "SaveImage",
            (COL["e"], y),
            title=f"p99, {label.replace('_', ' ')}",
            size=(520, 580),
            images=image.out(0),
            filename_prefix=f"iqa_{label}",
        )
    g.note(
        (COL["c"], 380),
        "Per-block weights: the same p99 target and seed, once on every block and once on the UNet's output "
        "blocks alone (block_weights 'input: 0, middle: 0, output: 1'). Measured on the toy, the output blocks "
        "carry most of the effect (docs/design.md). Names come from the model's own layout; a wrong one is an "
        "error that lists them.",
        size=(315, 260),
    )


def degradation(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, batch=3)
    qc = _adapter_and_condition(
        g,
        ckpt.out("MODEL"),
        "topiq_nr=1, laion_aes=50\ntopiq_nr=50, laion_aes=1\n1",
        title="Quality Condition (low targets)",
    )
    same = _same_noise(g, latent)
    sampler, image = _sample_and_decode(g, qc, pos, neg, same, ckpt)
    g.add(
        "SaveImage",
        (COL["e"], 60),
        title="Degraded: technical / aesthetic / both",
        size=(600, 540),
        images=image.out(0),
        filename_prefix="iqa_degraded",
    )
    _score(g, (COL["c"], 760), image, "topiq_nr")
    g.note(
        (COL["c"], 400),
        "Low targets turn the adapter into a controllable degradation model. Item 1 lowers only "
        "the technical metric (TOPIQ at percentile 1, aesthetics at the median), item 2 only the aesthetic one, "
        "item 3 both. Each line names every metric of the adapter, or gives one number for all. All three start "
        "from the same noise (Batch Latent Seed Behavior, fixed).",
        size=(315, 240),
    )
    g.group("Scores", (COL["c"] - 20, 760 - GROUP_HEAD, 1240, 360 + GROUP_HEAD), color="#3f789e")


def _guided_pair(g: Graph, plain_model, guided_model, pos, neg, latent, vae, labels: tuple[str, str]):
    """Two samplers with the same seed, one on each model, decoded and batched [plain, guided]."""
    a = _sampler(g, (COL["c"], 60), plain_model, pos, neg, latent.out(0), title=labels[0])
    b = _sampler(g, (COL["c"], 380), guided_model, pos, neg, latent.out(0), title=labels[1])
    da = g.add("VAEDecode", (COL["d"], 60), size=(260, 50), samples=a.out(0), vae=vae)
    db = g.add("VAEDecode", (COL["d"], 180), samples=b.out(0), vae=vae)
    both = g.add(
        "ImageBatch",
        (COL["d"], 300),
        title="Batch: image1, image2",
        image1=da.out(0),  # short: fits its title bar
        image2=db.out(0),
    )
    g.add(
        "SaveImage",
        (COL["e"], 60),
        title=f"{labels[0]} | {labels[1]}",
        size=(600, 420),
        images=both.out(0),
        filename_prefix="iqa_guidance",
    )
    return both


def _guidance(g: Graph, model, iqa, vae, xy=(COL["b"], 60), title=None):
    return g.add(
        "IQAGradientGuidance",
        xy,
        size=(400, 480),
        title=title,
        color=PACK,
        model=model,
        iqa_model=iqa.out(0),
        vae=vae.out(0),
        scale=0.1,
        start_percent=0.0,
        end_percent=0.8,
        every_n_steps=1,
        direction="maximize",
        target_z=2.0,
        max_decode_size=512,
        normalization="rms",
        clip=0.0,
        sigma_weighting="constant",
        weight_2=1.0,
        weight_3=1.0,
    )


def gradient_guidance(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, top=620, ckpt_y=400)
    iqa = g.add(
        "IQALoadModel",
        (COL["a"], 60),
        size=(A_W, 110),
        title="Load IQA Model (guidance)",
        color=PACK,
        metric="topiq_nr",
        allow_download=False,
        device="auto",
    )
    vae = g.add(
        "VAELoader",
        (COL["a"], 240),
        size=(A_W, 60),
        title="Load VAE (TAESD-XL, for the gradient)",
        vae_name=GUIDANCE_VAE,
    )
    gg = _guidance(g, ckpt.out("MODEL"), iqa, vae)
    g.group("IQA Gradient Guidance", (COL["a"] - 20, 60 - GROUP_HEAD, 960, 500 + GROUP_HEAD), color="#a1309b")
    both = _guided_pair(g, ckpt.out("MODEL"), gg.out(0), pos, neg, latent, ckpt.out("VAE"), ("Unguided", "Guided"))
    _score(g, (COL["c"], 920), both, iqa=iqa, title="IQA Score (the guided metric)")
    _score(g, (COL["c"], 1280), both, "musiq", title="IQA Score (a held-out metric)")
    g.note(
        (COL["c"], 690),
        "Same seed with and without IQA Gradient Guidance; the batch is [unguided, guided]. The "
        "guided metric's score rises by construction; the held-out metric shows whether the gain is real or "
        "metric-specific (high scales make adversarial patterns).",
        size=(560, 90),
    )
    g.group(
        "Scores: index 0 unguided, 1 guided", (COL["c"] - 20, 920 - GROUP_HEAD, 1240, 720 + GROUP_HEAD), color="#3f789e"
    )


def quality_condition_with_guidance(g: Graph) -> None:
    ckpt, pos, neg, latent = _sdxl_base(g, top=620, ckpt_y=1100)
    loader = g.add(
        "IQAAdapterLoader",
        (COL["a"], 60),
        size=(A_W, 130),
        color=PACK,
        adapter_name=QUALITY_ADAPTER,
        metadata_override="",
    )
    qc = g.add(
        "IQAQualityCondition",
        (COL["a"], 250),
        size=(A_W, 400),
        color=PACK,
        model=ckpt.out("MODEL"),
        iqa_adapter=loader.out(0),
        targets="99",
        target_mode="percentile",
        scale=1.0,
        start_percent=0.0,
        end_percent=1.0,
        uncond="zeros",
        negative_strength=0.5,
    )
    iqa = g.add(
        "IQALoadModel",
        (COL["a"], 720),
        size=(A_W, 110),
        title="Load IQA Model (guidance)",
        color=PACK,
        metric="topiq_nr",
        allow_download=False,
        device="auto",
    )
    vae = g.add(
        "VAELoader",
        (COL["a"], 900),
        size=(A_W, 60),
        title="Load VAE (TAESD-XL, for the gradient)",
        vae_name=GUIDANCE_VAE,
    )
    gg = _guidance(g, qc.out(0), iqa, vae, title="IQA Gradient Guidance (after Quality Condition)")
    g.group(
        "Quality Condition, then guidance", (COL["a"] - 20, 60 - GROUP_HEAD, 960, 940 + GROUP_HEAD), color="#a1309b"
    )
    both = _guided_pair(
        g, qc.out(0), gg.out(0), pos, neg, latent, ckpt.out("VAE"), ("Condition only", "Condition + guidance")
    )
    _score(g, (COL["c"], 920), both, iqa=iqa, title="IQA Score (the guided metric)")
    _score(g, (COL["c"], 1280), both, "musiq", title="IQA Score (a held-out metric)")
    g.note(
        (COL["c"], 690),
        "Quality Condition at p99 stacked with a light IQA Gradient Guidance (scale 0.1, first 80 % "
        "of the schedule). The batch is [condition only, condition + guidance], same seed.",
        size=(560, 90),
    )
    g.group(
        "Scores: index 0 condition only, 1 with guidance",
        (COL["c"] - 20, 920 - GROUP_HEAD, 1240, 720 + GROUP_HEAD),
        color="#3f789e",
    )


def reference_quality_transfer(g: Graph) -> None:
    loader = g.add(
        "IQAAdapterLoader",
        (COL["a"], 60),
        size=(A_W, 130),
        title="Load IQA-Adapter (reference-based)",
        color=PACK,
        adapter_name=REFERENCE_ADAPTER,
        metadata_override="",
    )
    iqa = g.add(
        "IQALoadModel",
        (COL["a"], 250),
        size=(A_W, 110),
        title="Load IQA Model (the adapter's embedding metric)",
        color=PACK,
        metric="topiq_nr",
        allow_download=False,
        device="auto",
    )
    ref = g.add("LoadImage", (COL["a"], 420), size=(A_W, 380), title="Reference photo", image="example.png")
    ckpt = g.add("CheckpointLoaderSimple", (COL["a"], 1160), size=(A_W, 100), ckpt_name=CHECKPOINT)
    blur = _blurred(g, ref, (COL["b"], 380), "Distort the reference (blur)")
    rqt = g.add(
        "IQAReferenceQualityTransfer",
        (COL["b"], 60),
        size=(400, 250),
        color=PACK,
        model=ckpt.out("MODEL"),
        iqa_adapter=loader.out(0),
        reference=blur.out(0),
        iqa_model=iqa.out(0),
        scale=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    g.add("PreviewImage", (COL["b"], 520), size=(400, 320), title="Distorted reference", images=blur.out(0))
    pos = g.add(
        "CLIPTextEncode",
        (COL["b"], 900),
        size=(400, 200),
        title="Positive prompt",
        color="green",
        text=PROMPT,
        clip=ckpt.out("CLIP"),
    )
    neg = g.add(
        "CLIPTextEncode",
        (COL["b"], 1160),
        size=(400, 200),
        title="Negative prompt",
        color="red",
        text="",
        clip=ckpt.out("CLIP"),
    )
    g.group("Reference Quality Transfer", (COL["a"] - 20, 60 - GROUP_HEAD, 960, 800 + GROUP_HEAD), color="#a1309b")
    content = g.add("LoadImage", (COL["c"], 60), size=(315, 380), title="Content photo (img2img)", image="example.png")
    scaled = g.add(
        "ImageScale",
        (COL["c"], 500),
        size=(315, 150),
        image=content.out("IMAGE"),
        upscale_method="lanczos",
        width=1024,
        height=1024,
        crop="center",
    )
    latent = g.add("VAEEncode", (COL["c"], 700), size=(315, 50), pixels=scaled.out(0), vae=ckpt.out("VAE"))
    sampler = _sampler(
        g, (COL["c"], 820), rqt.out(0), pos, neg, latent.out(0), title="KSampler (img2img, denoise 0.6)", denoise=0.6
    )
    image = g.add("VAEDecode", (COL["d"], 60), size=(260, 50), samples=sampler.out(0), vae=ckpt.out("VAE"))
    g.add(
        "SaveImage",
        (COL["e"], 60),
        size=(560, 600),
        title="Content with the reference's quality",
        images=image.out(0),
        filename_prefix="iqa_reference_transfer",
    )
    _score(g, (COL["c"], 700), image, iqa=iqa, title="IQA Score (output)")
    _score(g, (COL["c"], 1080), blur, iqa=iqa, title="IQA Score (distorted reference)")
    g.note(
        (COL["d"], 200),
        "img2img of the content photo, conditioned on the quality traits of a different, deliberately "
        "distorted reference (blur here; try ImageQuantize or a JPEG-damaged file). The adapter transfers the blur, "
        "not the reference's content; the two IQA Scores should come out close. A reference-based adapter carries its "
        "embedding spec (metric, taps, pooling) in its metadata.",
        size=(300, 260),
    )


def genziqa_score(g: Graph) -> None:
    ckpt = g.add(
        "CheckpointLoaderSimple", (COL["a"], 60), size=(A_W, 100), title="SD 2.1-base", ckpt_name=GENZIQA_CHECKPOINT
    )
    photo = g.add("LoadImage", (COL["a"], 220), size=(A_W, 380), title="Photo to judge", image="example.png")
    blur = _blurred(g, photo, (COL["b"], 300), "A blurred copy")
    both = g.add("ImageBatch", (COL["b"], 450), title="Batch: photo, blurred", image1=photo.out(0), image2=blur.out(0))
    judge = g.add(
        "IQALoadGenzIQA",
        (COL["b"], 60),
        size=(400, 150),
        color=PACK,
        model=ckpt.out("MODEL"),
        clip=ckpt.out("CLIP"),
        vae=ckpt.out("VAE"),
        genziqa_name=GENZIQA_FILE,
    )
    g.add(
        "SaveImage", (COL["c"], 720), size=(420, 300), title="Judged", images=both.out(0), filename_prefix="iqa_judged"
    )
    _score(g, (COL["c"], 60), both, iqa=judge, title="IQA Score (GenzIQA)")
    g.note(
        (COL["c"], 430),
        "GenzIQA judges quality with the diffusion model itself: the cross-attention between the image's noisy "
        "latent and learned 'good photo' / 'bad photo' prompts. The photo should score above its blurred copy. "
        "No trained GenzIQA file is published: train one with python -m training genziqa-train, or convert one "
        "trained with the authors' code (docs/genziqa.md), into models/genziqa, made for the checkpoint connected.",
        size=(420, 240),
    )


_QC = ("IQAAdapterLoader", "IQAQualityCondition")
_SCORE = ("IQALoadModel", "IQAScore")
# slug -> (builder, this pack's node types it needs); its title and file name: workflow_titles.TITLES
WORKFLOWS: dict[str, tuple[Callable[[Graph], None], tuple[str, ...]]] = {
    "sdxl_quality_condition_t2i": (quality_condition_t2i, _QC),
    "sdxl_quality_sweep": (quality_sweep, _QC + _SCORE),
    "sdxl_degradation": (degradation, _QC + _SCORE),
    "sdxl_reference_quality_transfer": (
        reference_quality_transfer,
        ("IQAAdapterLoader", "IQAReferenceQualityTransfer") + _SCORE,
    ),
    "sdxl_gradient_guidance": (gradient_guidance, _SCORE + ("IQAGradientGuidance",)),
    "sdxl_quality_condition_with_guidance": (quality_condition_with_guidance, _QC + _SCORE + ("IQAGradientGuidance",)),
    "sd2_genziqa_score": (genziqa_score, ("IQALoadGenzIQA", "IQAScore")),
    "sdxl_best_of_n": (best_of_n, _QC + _SCORE + ("IQABestOfN",)),
    "sdxl_regional_quality": (regional_quality, _QC),
    "sdxl_block_weights": (block_weights, _QC),
}


def check_titles() -> list[str]:
    """What is wrong with the titles: a workflow without one, one not safe as a file name, two alike."""
    problems = [f"{slug}: no title in scripts/workflow_titles.py TITLES" for slug in WORKFLOWS if slug not in TITLES]
    for slug, title in TITLES.items():
        if unsafe_characters(title):
            problems.append(f"{slug}: title {title!r} has {unsafe_characters(title)}; choose another")
    if len({t.casefold() for t in TITLES.values()}) != len(TITLES):  # case-insensitive file systems
        problems.append("two titles differ only in case")
    return problems


def build_all(object_info: Mapping) -> tuple[dict[str, dict], list[str]]:
    """UI workflows by slug, and the slugs skipped because the host lacks one of their nodes."""
    problems = check_titles()
    if problems:
        raise SystemExit("; ".join(problems))
    built, skipped = {}, []
    for name, (builder, needs) in WORKFLOWS.items():
        if any(n not in object_info for n in needs):
            skipped.append(f"{name} (needs {', '.join(n for n in needs if n not in object_info)})")
            continue
        g = Graph(object_info)
        builder(g)
        built[name] = g.to_json()
    return built, skipped


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the files (default: only report differences)")
    args = ap.parse_args()
    from workflow_docs import local_object_info

    info = local_object_info()
    built, skipped = build_all(info)
    changed = []
    for name, workflow in built.items():
        files = {example_path(name): dumps(workflow), PROMPTS / f"{name}.json": dumps(convert(workflow, info))}
        for path, text in files.items():
            if not path.exists() or path.read_text() != text:
                changed.append(str(path.relative_to(REPO)))
                if args.write:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    locale = REPO / "locales" / "en" / "main.json"  # the template group's title (scripts/workflow_titles.py)
    text = dumps(locale_messages())
    if not locale.exists() or locale.read_text() != text:
        changed.append(str(locale.relative_to(REPO)))
        if args.write:
            locale.parent.mkdir(parents=True, exist_ok=True)
            locale.write_text(text)
    for line in changed:
        print(("wrote " if args.write else "differs: ") + line)
    # a file no workflow writes (a renamed title, a removed workflow): reported, left to the maintainer
    stray = sorted(
        str(p.relative_to(REPO))
        for folder, key, suffixes in ((EXAMPLES, TITLES.values(), (".json", ".jpg")), (PROMPTS, WORKFLOWS, (".json",)))
        for p in folder.iterdir()
        if p.suffix in suffixes and p.stem not in key
    )
    for line in stray:
        print(f"stray: {line} (no workflow writes it; git rm it, or name it in scripts/workflow_titles.py)")
    if changed and args.write:
        print(
            "the thumbnails are editor screenshots: refresh them with IQA_WRITE_THUMBNAILS=1 scripts/test_upstream.sh tests/workflows/test_browser.py"
        )
    for line in skipped:
        print("skipped " + line)
    return 0 if (args.write or not changed) and not stray else 1


if __name__ == "__main__":
    sys.exit(main())
