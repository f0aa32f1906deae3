"""GenzIQA on the toy world: the word table takes the context vectors (toy/text.py), a short training on
toy patches lowers the loss and ranks held-out patches, and the shipped toy GenzIQA file
(weights/toy/toy_genziqa.safetensors, weights/toy/MODEL_CARD.md) ranks held-out patches by their labels.

Labels are toy/genziqa_data.py's: MOS = 100 * (1 - max(blur, noise, jpeg level)). Held-out patches use
patch seed 1, training patches seed 0 (no patch shared). Floors are set far below the measurements
(docs/genziqa.md "The toy proof"), so another CPU's float rounding cannot cross them: see each test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
import workflow_fixtures
from scipy import stats

from toy import genziqa_data
from toy.text import GENZIQA_PROMPTS, TextTable, ToyCLIP
from training.cli import build_parser
from training.common import host
from training.common.core import guidance

BASE = workflow_fixtures.TOY_BASE  # weights/toy/toy_base.safetensors
SHIPPED = conftest.REPO / "weights" / "toy" / "toy_genziqa.safetensors"
HELD_OUT = 100  # held-out patches (seed 1) the shipped file is scored on


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path.name} is not in weights/toy")


@pytest.fixture(scope="module")
def toy_base():
    _need(BASE)
    return host.load_base(BASE, plugins=["toy"])


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gz_toy") / "test"
    labels = genziqa_data.write_set(out, HELD_OUT, seed=1)
    return out, labels


def _load(images: Path, labels: Path) -> tuple[torch.Tensor, np.ndarray]:
    from training.genziqa.train import load_pixels

    with labels.open() as f:
        rows = list(csv.DictReader(f))
    pixels = torch.cat([load_pixels(images / r["name"]) for r in rows])
    return pixels, np.array([float(r["mos"]) for r in rows])


def _srcc(file, toy_base, images, labels) -> float:
    scorer = guidance("genziqa.scorer").GenzIQAScorer(toy_base.patcher, toy_base.clip, toy_base.vae, file)
    pixels, mos = _load(images, labels)
    return float(stats.spearmanr(scorer.score_images(pixels).numpy(), mos)[0])


def test_labels_are_one_minus_the_largest_degradation_level():
    assert genziqa_data.quality(0.0, 0.0, 0.0) == 100.0
    assert genziqa_data.quality(0.2, 0.0, 0.7) == pytest.approx(30.0)


def test_the_word_table_takes_context_vectors_with_gradients():
    table = TextTable(["<pad>", "<unk>", "good", "bad", "photo"], tokens=8, dim=16)
    clip = ToyCLIP(table)
    ctx = (torch.randn(16, 16) * 0.02).requires_grad_(True)
    cond, pooled = clip.encode_with_context("Good photo.", {"toy": ctx})
    assert cond.shape == (1, 24, 16) and pooled.shape == (1, 16)
    # the words' features are the table's own, after the 16 vectors
    torch.testing.assert_close(cond[:, 16:], clip.encode_from_tokens(clip.tokenize("Good photo.")))
    cond[:, :16].square().sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in table.parameters())  # the table stays frozen
    with pytest.raises(ValueError, match="context vectors 'toy'"):
        clip.encode_with_context("Good photo.", {"h": ctx.detach()})


def test_scorer_and_training_route_read_the_same_prompt_features(toy_base):
    from training.genziqa.prompts import encode_prompts

    file = guidance("genziqa.fresh").fresh_file(toy_base.patcher, toy_base.clip, "toy", seed=3, image_size=64)
    assert sorted(file.context) == ["toy"] and file.meta.layers.is_all
    scorer = guidance("genziqa.scorer").GenzIQAScorer(toy_base.patcher, toy_base.clip, toy_base.vae, file)
    context, _ = encode_prompts(toy_base.clip, file.meta.prompts, file.context)
    torch.testing.assert_close(context, scorer.context)


def test_the_shipped_toy_genziqa_file_ranks_held_out_patches(toy_base, held_out):
    """Floor 0.6, below the measurement (SRCC 0.805 on these 100 held-out patches; 0.819 on all 300 of
    validation seed 1 and 0.827 on test seed 2, weights/toy/MODEL_CARD.md). The file and the patches are fixed and scoring is deterministic (seeded
    noise), so another CPU changes only float rounding, which moves each score by a tiny fraction of its
    spread and could swap only near-ties; losing 0.2 of SRCC would need many pairs reordered."""
    _need(SHIPPED)
    file = guidance("genziqa.file_format").load_genziqa(SHIPPED)
    assert file.meta.family == "toy"
    assert _srcc(file, toy_base, *held_out) > 0.6


@pytest.mark.slow
def test_a_short_training_lowers_the_loss_and_ranks_held_out_patches(toy_base, held_out, tmp_path):
    """200 training patches (seed 0), STEPS steps of batch 8 at lr 3e-3, seed 0, the toy's two prompts (1-4
    CPU-minutes). Measured: the mean loss of the last 50 steps was 0.709 of the first 50 steps' (each step's
    loss is one random timestep and noise per patch, so a 50-step mean still wanders by a few per cent),
    held-out SRCC 0.519 on the 100 held-out patches (0.865 and 0.488 with the prompts alike). The floors (0.95 and 0.25) leave room for float rounding on another CPU:
    the draws are seeded, but after hundreds of Adam steps the weights are those of a similar, not the same,
    run; that the trained file ranks held-out patches at all (SRCC 0 untrained, labels independent of
    the seed) is the point."""
    from training.genziqa.train import train

    data = tmp_path / "train"
    labels = genziqa_data.write_set(data, 200, seed=0)
    argv = ["genziqa-train", "--base", str(BASE), "--images", str(data), "--labels", str(labels)]
    argv += ["--out", str(tmp_path / "run"), "--resolution", "64", "--batch-size", "8", "--lr", "3e-3"]
    argv += ["--steps", str(STEPS), "--seed", "0", "--checkpoint-every", "100000", "--prompts", *GENZIQA_PROMPTS]
    path = train(build_parser().parse_args(argv), base=toy_base)
    with (tmp_path / "run" / "loss.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == STEPS and np.isfinite(losses).all()
    fall = np.mean(losses[-50:]) / np.mean(losses[:50])
    srcc = _srcc(guidance("genziqa.file_format").load_genziqa(path), toy_base, *held_out)
    print(f"toy GenzIQA, {STEPS} steps: loss last/first 50 steps {fall:.3f}, held-out SRCC {srcc:.3f}")
    assert fall < LOSS_FLOOR, losses
    assert srcc > SRCC_FLOOR


STEPS = 300
LOSS_FLOOR, SRCC_FLOOR = 0.95, 0.25


def test_training_refuses_prompts_the_word_table_reads_alike(toy_base, held_out, tmp_path):
    """'Good Photo.' and 'Bad Photo.' are both '<unk> photo' in the toy's vocabulary."""
    from training.common.errors import TrainingError
    from training.genziqa.train import train

    images, labels = held_out
    argv = ["genziqa-train", "--base", str(BASE), "--images", str(images), "--labels", str(labels)]
    argv += ["--out", str(tmp_path / "run"), "--resolution", "64", "--steps", "1"]
    with pytest.raises(TrainingError, match="give the same text features.*--prompts GOOD BAD"):
        train(build_parser().parse_args(argv), base=toy_base)
