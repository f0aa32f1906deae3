"""Whether a reference adapter has learned a degradation: training pictures with that degradation alone,
noised at fixed sigmas, their x0 estimated by the toy base with no adapter, with the adapter given each
picture's own embedding, and with it given clean pictures' embeddings; the median of the degradation's
own measure (toy/degradation_measures.py, trained on by no model) of each estimate.

An adapter that has learned the degradation moves the estimate towards the picture with its own embedding,
and away from it with a clean one. Generation compounds these per-step moves, so a small but consistent
gap is enough; no gap means the degradation cannot transfer, whatever the sampler. This is how the toy
reference adapter was found to learn blur and noise but not JPEG (docs/training.md).

    python -m toy.condition_check --ckpt weights/toy/toy_base.safetensors \\
        --adapter weights/toy/toy_adapter_reference.safetensors --data out/toy/patches \\
        --embeddings out/toy/embeddings.parquet --degradation jpeg
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .errors import ToyError

SIGMAS = (1.0, 0.5, 0.3, 0.2, 0.1)
# Each degradation's measure (toy/degradation_measures.py): blur lowers sharpness, noise raises the
# impulse share, JPEG raises blockiness.
MEASURE_OF = {"blur": "sharpness", "noise": "impulse share", "jpeg": "blockiness"}
CONDITIONS = ("none", "own", "clean")


def pictures(data: Path, degradation: str, n: int, level: float = 0.6) -> tuple[list[dict], list[dict]]:
    """The first n manifest rows with `degradation` above `level` and no other, and the first n clean rows."""
    manifest = data.parent / f"{data.name}.csv"
    if not manifest.is_file():
        raise ToyError(f"{manifest} not found: --data must be a folder written by python -m toy.patches")
    rows = list(csv.DictReader(manifest.open()))
    others = [k for k in MEASURE_OF if k != degradation]
    alone = [r for r in rows if float(r[degradation]) > level and not any(float(r[k]) for k in others)][:n]
    clean = [r for r in rows if not any(float(r[k]) for k in MEASURE_OF)][:n]
    if not alone or len(clean) < len(alone):
        raise ToyError(
            f"{manifest}: {len(alone)} pictures with {degradation} above {level} alone and {len(clean)} clean "
            "ones; make more pictures (python -m toy.patches --count) or lower the level"
        )
    return alone, clean[: len(alone)]


def check(
    ckpt: Path,
    adapter_file: Path,
    data: Path,
    embeddings: Mapping[str, np.ndarray],
    degradation: str,
    n: int = 24,
    sigmas: tuple[float, ...] = SIGMAS,
    seed: int = 0,
) -> tuple[float, list[tuple[float, dict[str, float]]]]:
    """(the pictures' median measure, [(sigma, {condition: median measure of the x0 estimates})])."""
    from PIL import Image

    import adapter as core  # the pack's core, top-level from the repo root (training/common/core.py)
    from training.common.host import attention_function

    from .degradation_measures import measure
    from .model import load_toy_checkpoint

    if degradation not in MEASURE_OF:
        raise ToyError(f"degradation {degradation!r}: choose one of {', '.join(MEASURE_OF)}")
    alone, clean = pictures(data, degradation, n)
    missing = [r["id"] for r in alone + clean if r["id"] not in embeddings]
    if missing:
        raise ToyError(f"no embedding for pictures {missing[:3]}: compute them with python -m training embed")
    name = MEASURE_OF[degradation]
    images = np.stack([np.asarray(Image.open(data / f"{r['id']}.png").convert("RGB"), np.float32) / 255 for r in alone])
    patcher, clip, vae = load_toy_checkpoint(ckpt)
    iqa_adapter = core.IQAAdapter.load(adapter_file)
    attention = attention_function()  # the host's, as Quality Condition hands the patch

    def attached(rows: list[dict]):
        vectors = torch.from_numpy(np.stack([embeddings[r["id"]] for r in rows])).float()
        tokens = core.condition_from_vectors(iqa_adapter, vectors, 1.0)
        return core.attach_quality_tokens(patcher, iqa_adapter.spec, tokens, attention, iqa_adapter.name)

    models = {"none": patcher, "own": attached(alone), "clean": attached(clean)}
    model = patcher.model
    z = model.process_latent_in(vae.encode(torch.from_numpy(images)))
    ms, context = model.model_sampling, clip.table.encode_texts([r["caption"] for r in alone])
    out = []
    for s in sigmas:
        sigma = torch.full((len(alone),), float(s))
        noisy = z + torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)) * s
        row = {}
        for label, m in models.items():
            options = {**m.model_options.get("transformer_options", {}), "cond_or_uncond": [0], "sigmas": sigma}
            with torch.inference_mode():
                eps = m.get_model_object("diffusion_model")(
                    ms.calculate_input(sigma, noisy), ms.timestep(sigma).float(), context=context,
                    transformer_options=options,
                )  # fmt: skip
            x0 = vae.decode(model.process_latent_out(noisy - eps * s)).clamp(0, 1).numpy()
            row[label] = float(np.median(measure(x0)[name]))
        out.append((s, row))
    return float(np.median(measure(images)[name])), out


def main(argv: list[str] | None = None) -> None:
    from training.iqa_adapter.embed import read_embeddings

    ap = argparse.ArgumentParser(prog="python -m toy.condition_check", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("weights/toy/toy_base.safetensors"))
    ap.add_argument("--adapter", type=Path, default=Path("weights/toy/toy_adapter_reference.safetensors"))
    ap.add_argument("--data", type=Path, default=Path("out/toy/patches"))
    ap.add_argument("--embeddings", type=Path, default=Path("out/toy/embeddings.parquet"))
    ap.add_argument("--degradation", choices=tuple(MEASURE_OF), default="jpeg")
    ap.add_argument("--n", type=int, default=24)
    a = ap.parse_args(argv)
    embeddings, _, _ = read_embeddings(a.embeddings)
    original, rows = check(a.ckpt, a.adapter, a.data, embeddings, a.degradation, a.n)
    name = MEASURE_OF[a.degradation]
    print(f"{name} of the {a.degradation} pictures themselves (median): {original:.4g}\n")
    print("| sigma | no adapter | own embedding | clean embeddings |\n|---|---|---|---|")
    for s, row in rows:
        print(f"| {s:g} | " + " | ".join(f"{row[c]:.4g}" for c in CONDITIONS) + " |")


if __name__ == "__main__":
    main()
