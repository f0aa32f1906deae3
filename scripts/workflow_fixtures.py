"""Tiny runs of the example workflows on the real host: the API prompt derived from a UI workflow, with
every node that reads a real model file swapped for a test-only stand-in from tests/fixture_nodes (same
output slots, so every link stays valid), sizes and step counts shrunk, and tiny random adapters written
under the names the graph asks for. Every other node (text encoding, sampling, VAE decode and encode,
saving, this pack's nodes) runs unchanged.

The stand-ins (tests/fixture_nodes/more_nodes.py, tests/fixture_nodes/__init__.py):
    CheckpointLoaderSimple -> IQATestTinyCheckpoint  (tiny UNet in the SDXL or SD1.5 block layout, text-hash CLIP, random TAESD VAE;
                              in a graph with Load GenzIQA: the SD1.5 layout and the host's own CLIP classes at tiny width)
    VAELoader              -> IQATestTinyVAE         (random TAESD in the host's VAE class)
    LoadImage              -> IQATestPatternImage    (a synthetic picture)
    IQALoadModel           -> itself with a metric that needs no weight file (piqe) where it only feeds IQA Score,
                              else IQATestRandomIQAModel (the same metric with random weights)
    IQAAdapterLoader       -> itself, pointed at a random tiny adapter with the metadata the real one would have
    IQALoadGenzIQA         -> itself, pointed at an untrained tiny GenzIQA file (write_tiny_genziqa)
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

REPO = Path(__file__).resolve().parent.parent

import comfy_host  # noqa: E402
from workflow_build import GENZIQA_FILE, QUALITY_ADAPTER, REFERENCE_ADAPTER  # noqa: E402

# Metadata of the tiny stand-in for each adapter the example graphs name (what the real file would carry).
TINY_ADAPTERS: dict[str, dict] = {
    QUALITY_ADAPTER: {
        "metadata": {
            "metrics": ["topiq_nr", "laion_aes"],
            "use_flag": False,
            "pos_encode_L": 0,
            "normalized": True,
            "kind": "quality",
            "base_model": "sdxl",
            "comment": "random weights, for demos and tests only",
        }
    },
    REFERENCE_ADAPTER: {
        "metadata": {
            "kind": "reference",
            "base_model": "sdxl",
            "embedding": {"spec": "topiq_nr_resnet50_meanstd", "resolution": 64},
            "comment": "random weights, for demos and tests only",
        },
        "input_dim": 2 * (256 + 512 + 1024 + 2048),
    },
}
# The tiny GenzIQA file for each one the example graphs name; it fits the tiny SD1.5-layout checkpoint.
TINY_GENZIQA_LAYOUT = "sd15"
TINY_GENZIQA: dict[str, str] = {GENZIQA_FILE: f"tiny_{TINY_GENZIQA_LAYOUT}_genziqa.safetensors"}
# A real no-reference metric that needs no weight file (pyiqa's PIQE: block statistics; lower is better).
WEIGHTLESS_METRIC = "piqe"


@dataclass
class TinyOptions:
    layout: str = "sdxl"  # block layout of the tiny UNet: "sdxl" or "sd15"
    size: int = 64  # pixel width and height of latents, loaded images and guidance decodes
    steps: int = 4  # sampler steps (at most)
    score_metric: Optional[str] = WEIGHTLESS_METRIC  # metric for IQA Load Model nodes that only feed IQA Score
    adapters: dict[str, str] = field(default_factory=dict)  # real adapter file name -> tiny file name


def _consumers(prompt: Mapping[str, Any]) -> dict[str, set[str]]:
    """Class types that read each node's outputs."""
    out: dict[str, set[str]] = {}
    for node in prompt.values():
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                out.setdefault(value[0], set()).add(node["class_type"])
    return out


def tiny_prompt(prompt: Mapping[str, Any], opts: TinyOptions) -> dict:
    """A copy of an API prompt that runs on the fixtures in seconds (see the module docstring)."""
    p = copy.deepcopy(dict(prompt))
    readers = _consumers(p)
    genziqa = any(n["class_type"] == "IQALoadGenzIQA" for n in p.values())
    for node_id, node in p.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple" and genziqa:  # GenzIQA's prompts need a real text model
            tiny = {"layout": TINY_GENZIQA_LAYOUT, "seed": 0, "host_clip": True}
            node.update(class_type="IQATestTinyCheckpoint", inputs=tiny)
        elif kind == "CheckpointLoaderSimple":
            node.update(
                class_type="IQATestTinyCheckpoint", inputs={"layout": opts.layout, "seed": 0, "host_clip": False}
            )
        elif kind == "VAELoader":
            node.update(class_type="IQATestTinyVAE", inputs={"seed": 5})
        elif kind == "LoadImage":
            seed = zlib.crc32(str(inputs.get("image", "")).encode()) % 1000
            node.update(
                class_type="IQATestPatternImage", inputs={"width": opts.size, "height": opts.size, "seed": seed}
            )
        elif kind == "IQALoadModel":
            if opts.score_metric and readers.get(node_id, set()) <= {"IQAScore"}:
                inputs.update(metric=opts.score_metric, allow_download=False)
            else:
                node.update(class_type="IQATestRandomIQAModel", inputs={"metric": inputs["metric"]})
        elif kind == "IQAAdapterLoader":
            name = inputs.get("adapter_name")
            if name not in opts.adapters:
                raise ValueError(f"No tiny stand-in for adapter '{name}'; known: {sorted(opts.adapters)}")
            inputs["adapter_name"] = opts.adapters[name]
        elif kind == "IQALoadGenzIQA":
            name = inputs.get("genziqa_name")
            if name not in TINY_GENZIQA:
                raise ValueError(f"No tiny stand-in for GenzIQA file '{name}'; known: {sorted(TINY_GENZIQA)}")
            inputs["genziqa_name"] = TINY_GENZIQA[name]
        elif kind in ("EmptyLatentImage", "ImageScale"):
            inputs.update(width=opts.size, height=opts.size)
        elif kind in ("KSampler", "KSamplerAdvanced"):
            inputs["steps"] = min(int(inputs.get("steps", opts.steps)), opts.steps)
        elif kind == "IQAGradientGuidance":
            inputs["max_decode_size"] = opts.size
    return p


def fixture_module(submodule: str) -> Any:
    """A module of the test-only fixture pack (tests/fixture_nodes): the copy the host loaded, else the
    repository's imported by path, after this pack (the fixtures build on its core), in a helper process."""
    from workflow_host import FIXTURES_NAME, PACK_NAME

    _loaded_or_by_path(PACK_NAME, REPO / "__init__.py")
    package = _loaded_or_by_path(FIXTURES_NAME, REPO / "tests" / "fixture_nodes" / "__init__.py")
    return importlib.import_module(f"{package.__name__}.{submodule}")


def write_tiny_adapters(folder: Path, names: Optional[list[str]] = None, layout: str = "sdxl") -> dict[str, str]:
    """Random tiny adapters for the named real ones (default: all known), written into `folder`;
    returns real name -> tiny file name, for TinyOptions.adapters."""
    tiny = fixture_module("tiny_models")
    mapping = {}
    for name in names or list(TINY_ADAPTERS):
        entry = TINY_ADAPTERS[name]
        meta = dict(entry["metadata"], base_model="sd15" if layout == "sd15" else "sdxl")
        tiny_name = f"tiny_{layout}_{Path(name).stem}.safetensors"
        path = Path(folder) / tiny_name
        if not path.exists():
            tiny.write_adapter(path, layout, meta, input_dim=entry.get("input_dim"))
        mapping[name] = tiny_name
    return mapping


def _loaded_or_by_path(name: str, init: Path) -> Any:
    """The package whose __init__.py is `init`, as the host loaded it (under whatever name), else imported by
    path under `name` (in a helper process, where no host has loaded custom nodes)."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == init.resolve():
            return module
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_genziqa(folder: Path) -> dict[str, str]:
    """The tiny GenzIQA files (TINY_GENZIQA) in `folder` (models/genziqa), where Load GenzIQA lists them; returns
    real name -> tiny name."""
    more_nodes = fixture_module("more_nodes")
    for tiny_name in TINY_GENZIQA.values():
        path = Path(folder) / tiny_name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            more_nodes.write_genziqa(path, TINY_GENZIQA_LAYOUT)
    return dict(TINY_GENZIQA)


# -- the toy world (toy/, weights/toy): the same graphs on a trained 64 px model and a trained adapter ---------------
TOY_WEIGHTS = REPO / "weights" / "toy"
TOY_BASE = TOY_WEIGHTS / "toy_base.safetensors"
TOY_ADAPTER = (
    "toy_adapter_quality.safetensors"  # in weights/toy; make_workspace(toy=True) links it into models/iqa_adapter
)
TOY_REFERENCE_ADAPTER = "toy_adapter_reference.safetensors"  # the same; embeds with the toy quality net


# The subjects of the README's first picture and the demo's sweep_grid.png (scripts/toy_sweep.py), a row each.
PICTURE_CAPTIONS = ("a photo of grace hopper", "a photo of coffee")


@dataclass
class ToyOptions:
    """How a graph runs on the toy model: the sampler settings the toy's proof test measured
    (tests/toy/test_toy_proof.py) and Quality Condition at the node's own defaults (uncond zeros, the
    official default); the caption is one of the toy's training captions (toy/sources.py)."""

    text: str = "a photo of a cat"
    steps: int = 25
    cfg: float = 3.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    score_metric: str = WEIGHTLESS_METRIC
    adapter: str = TOY_ADAPTER
    seed: Optional[int] = None  # None: the graph's own
    uncond: str = "zeros"
    negative_strength: float = 0.5
    reference_photo: str = "coffee"  # reference graphs: the photo of the four references (not the caption's)
    reference_level: float = 1.0  # and their degradation level (toy/reference_images.py)
    reference_scale: Optional[float] = None  # None: the graph's own


def toy_ready() -> bool:
    """Both toy files are in weights/toy (they are committed; retrain with scripts/train_toy.sh)."""
    return TOY_BASE.is_file() and (TOY_WEIGHTS / TOY_ADAPTER).is_file()


def is_reference_graph(prompt: Mapping[str, Any]) -> bool:
    return any(n["class_type"] == "IQAReferenceQualityTransfer" for n in prompt.values())


def toy_unsupported(prompt: Mapping[str, Any]) -> list[str]:
    """Why a graph cannot run on the toy (empty: it can): the toy has a quality adapter and a reference
    adapter (both on its own quality net, which the pack's gradient guidance does not load) and makes images
    from text only; a reference graph's photos become the toy's reference photos (toy_reference_prompt)."""
    readers = _consumers(prompt)
    reference = is_reference_graph(prompt)
    why = set()
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if kind in ("IQAGradientGuidance", "VAELoader") or (kind == "LoadImage" and not reference):
            why.add(kind)
        elif kind == "IQAReferenceQualityTransfer" and not (TOY_WEIGHTS / TOY_REFERENCE_ADAPTER).is_file():
            why.add(f"{kind} (no {TOY_REFERENCE_ADAPTER} in weights/toy)")
        elif kind == "IQALoadModel" and not reference and not readers.get(node_id, set()) <= {"IQAScore"}:
            why.add("IQALoadModel feeding guidance")
    return sorted(why)


def target_items(inputs: Mapping[str, Any]) -> list[str]:
    """Quality Condition's targets text split into batch items (lines or ';'), as the node splits it."""
    return [t.strip() for t in str(inputs.get("targets", "")).replace(";", "\n").splitlines() if t.strip()]


def sweep_targets(prompt: Mapping[str, Any]) -> list[float]:
    """The percentile targets of a graph's Quality Condition when it sweeps (one number per batch item, at
    least two), else []."""
    for node in prompt.values():
        if node["class_type"] == "IQAQualityCondition" and node["inputs"].get("target_mode") == "percentile":
            try:
                values = [float(t) for t in target_items(node["inputs"])]
            except ValueError:
                return []
            return values if len(values) > 1 else []
    return []


def toy_prompt(prompt: Mapping[str, Any], opts: ToyOptions) -> dict:
    """A copy of a text-to-image API prompt on the toy world: Load Toy Checkpoint for the checkpoint loader,
    Empty Toy Latent (64x64, same batch) for Empty Latent Image, the toy adapter for the quality adapter,
    the toy caption as positive and an empty negative, PIQE for scoring (through the toy adapter's table, which
    holds only toy_quality, so PIQE's percentiles are CC3M's), and the toy's sampler settings and Quality
    Condition's defaults."""
    why = toy_unsupported(prompt)
    if why:
        raise ValueError(f"This graph cannot run on the toy model: it uses {', '.join(why)}")
    if is_reference_graph(prompt):
        return toy_reference_prompt(prompt, opts)
    p = copy.deepcopy(dict(prompt))
    negatives = {n["inputs"]["negative"][0] for n in p.values() if n["class_type"] in ("KSampler", "KSamplerAdvanced")}
    loaders = [i for i, n in p.items() if n["class_type"] == "IQAAdapterLoader"]
    for node_id, node in p.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            node.update(class_type="IQAToyCheckpoint", inputs={})
        elif kind == "EmptyLatentImage":
            node.update(
                class_type="IQAToyEmptyLatent", inputs={"width": 64, "height": 64, "batch_size": inputs["batch_size"]}
            )
        elif kind == "IQAAdapterLoader":
            inputs["adapter_name"] = opts.adapter
        elif kind == "IQAQualityCondition":
            inputs.update(uncond=opts.uncond, negative_strength=opts.negative_strength)
        elif kind == "IQALoadModel":
            inputs.update(metric=opts.score_metric, allow_download=False)
        elif kind == "IQAScore" and loaders:  # percentiles in the toy adapter's own table
            inputs["iqa_adapter"] = [loaders[0], 0]
        elif kind == "CLIPTextEncode":
            inputs["text"] = "" if node_id in negatives else opts.text
        elif kind in ("KSampler", "KSamplerAdvanced"):
            inputs.update(steps=opts.steps, cfg=opts.cfg, sampler_name=opts.sampler_name, scheduler=opts.scheduler)
            if opts.seed is not None:
                inputs["seed" if kind == "KSampler" else "noise_seed"] = opts.seed
    return p


def toy_reference_prompt(prompt: Mapping[str, Any], opts: ToyOptions) -> dict:
    """A reference graph on the toy: text to image from one noise, conditioned on the toy's four references.

    Each Reference Quality Transfer's reference source (the distortion node, or the photo itself) becomes Toy
    Reference Photos (opts.reference_photo: clean, blurred, noisy and JPEG at opts.reference_level); the
    content photo's img2img (VAE Encode) becomes four empty toy latents with one noise (Latent Batch Seed
    Behavior, fixed) at denoise 1, since the toy draws from its caption, and so does a text-to-image graph's
    Empty Latent Image (whatever its size and batch: one item per reference); IQA models become the toy quality
    net the reference adapter embeds with; nodes left without readers are dropped."""
    p = copy.deepcopy(dict(prompt))
    for node in list(p.values()):
        if node["class_type"] == "IQAReferenceQualityTransfer":
            src = node["inputs"]["reference"][0]
            p[src] = {
                "class_type": "IQAToyReferences",
                "inputs": {"photo": opts.reference_photo, "level": opts.reference_level, "seed": 0},
                "_meta": {"title": "Toy references: clean, blur, noise, JPEG"},
            }
            if opts.reference_scale is not None:
                node["inputs"]["scale"] = opts.reference_scale
    for node_id, node in list(p.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("VAEEncode", "EmptyLatentImage"):
            p[f"{node_id}_empty"] = {
                "class_type": "IQAToyEmptyLatent",
                "inputs": {"width": 64, "height": 64, "batch_size": 4},
            }
            p[node_id] = {
                "class_type": "LatentBatchSeedBehavior",
                "inputs": {"samples": [f"{node_id}_empty", 0], "seed_behavior": "fixed"},
            }
        elif kind == "IQALoadModel":
            p[node_id] = {"class_type": "IQAToyQualityNet", "inputs": {}}
        elif kind == "IQAAdapterLoader":
            inputs["adapter_name"] = TOY_REFERENCE_ADAPTER
        elif kind == "CheckpointLoaderSimple":
            node.update(class_type="IQAToyCheckpoint", inputs={})
        elif kind in ("KSampler", "KSamplerAdvanced"):
            inputs.update(steps=opts.steps, cfg=opts.cfg, sampler_name=opts.sampler_name, scheduler=opts.scheduler)
            inputs["denoise"] = 1.0
            if opts.seed is not None:
                inputs["seed" if kind == "KSampler" else "noise_seed"] = opts.seed
    negatives = {n["inputs"]["negative"][0] for n in p.values() if n["class_type"] in ("KSampler", "KSamplerAdvanced")}
    for node_id, node in p.items():
        if node["class_type"] == "CLIPTextEncode":
            node["inputs"]["text"] = "" if node_id in negatives else opts.text
    return _without_unread(p)


def toy_reference_inputs(prompt: Mapping[str, Any]) -> dict:
    """The inputs of the (first) Toy Reference Photos node of a toy reference prompt."""
    return next(n["inputs"] for n in prompt.values() if n["class_type"] == "IQAToyReferences")


def _without_unread(p: dict) -> dict:
    """The prompt without the nodes whose outputs nothing reads (output nodes stay)."""
    keep_always = {"SaveImage", "PreviewImage"}
    while True:
        read = _consumers(p)
        drop = [i for i, n in p.items() if n["class_type"] not in keep_always and not read.get(i)]
        if not drop:
            return p
        for i in drop:
            del p[i]


def write_tiny_files(models: Path, layout: str = "sdxl") -> dict[str, str]:
    """Every tiny stand-in file the example graphs need, under a host's models folder: the adapters in
    iqa_adapter/ and the GenzIQA files in genziqa/. Returns real adapter name -> tiny name."""
    write_tiny_genziqa(Path(models) / "genziqa")
    return write_tiny_adapters(Path(models) / "iqa_adapter", layout=layout)


def write_tiny_files_quietly(
    models: Path, layout: str = "sdxl", host: Optional[comfy_host.Host] = None
) -> dict[str, str]:
    """write_tiny_files in a child process of the host's Python (it imports torch and the host, which log to
    the console; the files must fit that host's UNet). host: default, this venv's fork."""
    import json
    import subprocess

    argv, env = (host or comfy_host.fork()).helper_command(Path(__file__), "write-files", str(models), layout)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Writing the tiny stand-in files failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # python scripts/workflow_fixtures.py write-files MODELS_FOLDER [LAYOUT] [--cpu]
    import json

    args = [a for a in sys.argv[1:] if a != "--cpu"]
    if len(args) < 2 or args[0] != "write-files":
        raise SystemExit("usage: workflow_fixtures.py write-files MODELS_FOLDER [sdxl|sd15] [--cpu]")
    if "--cpu" in sys.argv:  # upstream ComfyUI on its path: keep its import from initializing CUDA
        comfy_host.cpu_only_upstream()
    print(json.dumps(write_tiny_files(Path(args[1]), layout=args[2] if len(args) > 2 else "sdxl")))
