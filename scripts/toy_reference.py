"""Reference Quality Transfer on the toy world, measured: the Reference Quality Transfer example through the
real host's queue (workflow_fixtures.toy_reference_prompt).

Per seed, one batch of four items from one noise and one caption ("a photo of a cat"), each conditioned on
one of four references made from a photo of another subject (coffee): clean, blurred, with impulse noise and
JPEG-compressed (toy/reference_images.py). The outputs are measured with the three plain degradation
measures that no toy model was trained on (toy/degradation_measures.py: sharpness, impulse share,
blockiness), the toy quality net, and the nearest-source-photo check (toy/recognize.py: does the output show
the caption's subject, not the reference's?). A second batch at scale 0 must give four equal images.

    python scripts/toy_reference.py --seeds 8 --out out/toy/reference     # table and reference_sheet.png

tests/toy/test_reference_proof.py asserts on the same numbers; the demo (scripts/run_workflow.py) draws the
same sheet for its toy run of the example.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toy_sweep  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "sdxl_reference_quality_transfer"
KINDS = ("clean", "blur", "noise", "jpeg")  # the batch order of toy/reference_images.references
# The measure that reads each degradation type, and whether it is lower for the better picture.
TYPE_MEASURE = {"blur": "sharpness", "noise": "impulse share", "jpeg": "blockiness"}
TOY = workflow_fixtures.ToyOptions()  # the caption, the reference photo and its level


def example_api(object_info: dict) -> dict:
    """The Reference Quality Transfer example as an API prompt, as the host would queue it (real weights)."""
    return workflow_to_api.convert(json.loads(workflow_titles.example_path(EXAMPLE).read_text()), object_info)


def reference_prompt(
    object_info: dict, seed: int, scale: Optional[float] = None, opts: Optional[workflow_fixtures.ToyOptions] = None
) -> dict:
    """The example on the toy for one seed (scale None: the example's own, 1)."""
    opts = dataclasses.replace(opts or workflow_fixtures.ToyOptions(), seed=seed, reference_scale=scale)
    return workflow_fixtures.toy_prompt(example_api(object_info), opts)


def write_references(inputs: dict, out: Path) -> list[Path]:
    """The references a prompt's Toy Reference Photos node makes (the same function, so the same pixels), as
    PNGs in `out`, in KINDS order."""
    from PIL import Image

    from toy.reference_images import references

    batch = references(inputs["photo"], inputs["level"], inputs["seed"])
    paths = [out / f"reference_{k}.png" for k in KINDS]
    for image, path in zip(batch, paths):
        Image.fromarray(image).save(path)
    return paths


def run(server, seeds: Sequence[int], scale: Optional[float] = None) -> list[list[Path]]:
    """For each seed, the four outputs (KINDS order)."""
    info = server.object_info()
    return toy_sweep.run_saved(server, [reference_prompt(info, seed, scale) for seed in seeds], len(KINDS))


def measures(runs: list[list[Path]]) -> dict[str, np.ndarray]:
    """{measure: [seeds, KINDS]}: the three degradation measures and the toy quality net."""
    return toy_sweep.measure(runs, held_out=True, targets=KINDS, trained=[toy_sweep.TOY_METRIC])


def worse(m: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How much worse a is than b by measure m (positive: worse), per seed."""
    return a - b if toy_sweep.lower_better(m) else b - a


def comparisons(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per seed, each pairwise claim of the proof as a margin (positive: it holds):
    - '<t> ref vs <u> ref': a reference degraded by t makes the output worse by t's measure than a
      reference degraded by u does (type transfers);
    - 'clean ref vs <t> ref': the clean reference's output is better by t's measure than the t reference's."""
    at = {k: i for i, k in enumerate(KINDS)}
    out = {}
    for t, m in TYPE_MEASURE.items():
        for u in TYPE_MEASURE:
            if u != t:
                out[f"{t} ref vs {u} ref, {m}"] = worse(m, s[m][:, at[t]], s[m][:, at[u]])
        out[f"clean ref vs {t} ref, {m}"] = worse(m, s[m][:, at[t]], s[m][:, at["clean"]])
    return out


def table(s: dict[str, np.ndarray], claims: dict[str, np.ndarray], subjects: Optional[list] = None) -> str:
    lines = ["| measure | " + " | ".join(f"{k} ref" for k in KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for m, v in s.items():
        lines.append(f"| {m} (median) | " + " | ".join(f"{x:.4g}" for x in np.median(v, 0)) + " |")
    lines += ["", "| claim | seeds where it holds | median margin |", "|---|---|---|"]
    for name, v in claims.items():
        lines.append(f"| {name} | {int((v > 0).sum())}/{len(v)} | {np.median(v):.3g} |")
    if subjects is not None:
        hit = sum(m.caption == TOY.text for m in subjects)
        lines += ["", f"Outputs that show the caption's subject (nearest source photo): {hit}/{len(subjects)}"]
    return "\n".join(lines)


def sheet(refs: list[Path], outs: list[list[Path]], out: Path, s: Optional[dict[str, np.ndarray]] = None) -> Path:
    """One row per reference (KINDS): the reference, then its output for each run, with the degradation
    measures under each image (toy_sweep.grid); `s` holds them for the outputs where already measured."""
    from toy.degradation_measures import measure as degradation_measures

    ref_scores = degradation_measures(toy_sweep.load_images(refs).numpy())
    if s is None:
        flat = degradation_measures(toy_sweep.load_images([p for run in outs for p in run]).numpy())
        s = {m: v.reshape(len(outs), len(KINDS)) for m, v in flat.items()}
    paths, labels = [], []
    for k, kind in enumerate(KINDS):
        paths.append(refs[k])
        labels.append(f"{kind} reference\n" + _figures(ref_scores, k))
        for r, run in enumerate(outs):
            paths.append(run[k])
            labels.append(f"output, seed {r}\n" + _figures({m: s[m][r] for m in TYPE_MEASURE.values()}, k))
    return toy_sweep.grid(paths, labels, out, columns=1 + len(outs))


def _figures(scores: dict[str, np.ndarray], k: int) -> str:
    short = {"sharpness": "sharp", "impulse share": "impulses", "blockiness": "blocks"}
    return "\n".join(f"{short[m]} {scores[m][k]:.3g}" for m in TYPE_MEASURE.values())


def subjects(outs: list[list[Path]]) -> list:
    """The nearest source photo of every output (toy/recognize.py)."""
    text = TOY.text
    return [m for k in range(len(KINDS)) for m in toy_sweep.subjects(outs, [text] * len(outs), index=k)]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--shown", type=int, default=3, help="seeds drawn in the sheet")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "toy" / "reference")
    args = ap.parse_args(argv)
    with toy_sweep.toy_server(args.out) as server:
        outs = run(server, range(args.seeds))
        zero = run(server, range(min(args.seeds, 2)), scale=0.0)
        kept = []
        for r, run_paths in enumerate(outs[: args.shown]):
            kept.append([args.out / f"seed{r}_{k}.png" for k in KINDS])
            for src, dst in zip(run_paths, kept[-1]):
                dst.write_bytes(Path(src).read_bytes())
        refs = write_references(
            workflow_fixtures.toy_reference_inputs(reference_prompt(server.object_info(), 0)), args.out
        )
        s = measures(outs)
        claims = comparisons(s)
        found = subjects(outs)
        zero_spread = max(float(np.ptp(toy_sweep.load_images(z).numpy(), axis=0).max()) for z in zero)
    sheet(refs, kept, args.out / "reference_sheet.png", {m: v[: args.shown] for m, v in s.items()})
    np.savez(args.out / "scores.npz", **s)
    text = (
        f"{args.seeds} seeds, caption '{TOY.text}', four references of the "
        f"'{TOY.reference_photo}' photo at level "
        f"{TOY.reference_level} (Reference Quality Transfer at scale 1, the "
        "example's own), every item of a seed from the same noise.\n\n"
        + table(s, claims, found)
        + f"\n\nAt scale 0, the largest difference between the four outputs of one seed: {zero_spread:.4g}\n"
    )
    (args.out / "proof.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
