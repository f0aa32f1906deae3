"""Hidden node pack of the toy world: "Load Toy Checkpoint", "Empty Toy Latent", "Load Toy Quality Net" and
"Toy Reference Photos" (IQA-Adapter toy).

Not part of the IQA-Adapter pack's menu: like tests/fixture_nodes, this folder is mounted as its own custom
node (scripts/workflow_host.make_workspace(toy=True), tests/conftest.py) only by the demo and the tests.
The host imports this folder under its own name, so the repo's `toy` package is imported by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT = REPO / "weights" / "toy" / "toy_base.safetensors"


def _toy_package():
    """The repo's toy/ package (already imported, or loaded from REPO/toy by path)."""
    mod = sys.modules.get("toy")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve().parent == REPO / "toy":
        return mod
    spec = importlib.util.spec_from_file_location(
        "toy", REPO / "toy" / "__init__.py", submodule_search_locations=[str(REPO / "toy")]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["toy"] = mod
    spec.loader.exec_module(mod)
    return mod


class IQAToyCheckpoint:
    CATEGORY = "IQA-Adapter/toy"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    DESCRIPTION = (
        "The built-in toy world: a 1.5M-parameter pixel diffusion model trained from scratch on degraded "
        "64x64 photo patches, its word-table text encoder and its exact space-to-depth VAE "
        "(weights/toy/toy_base.safetensors). Generate 64x64 images (Empty Latent Image 64x64)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        _toy_package()
        from toy.errors import ToyError
        from toy.model import load_toy_checkpoint

        if not DEFAULT_CHECKPOINT.is_file():
            raise ToyError(
                f"{DEFAULT_CHECKPOINT}: the toy checkpoint is missing; restore it from git "
                f"(git checkout -- weights/toy) or retrain it with scripts/train_toy.sh"
            )
        return load_toy_checkpoint(DEFAULT_CHECKPOINT)


class IQAToyEmptyLatent:
    CATEGORY = "IQA-Adapter/toy"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    DESCRIPTION = (
        "Empty Latent Image for the toy model: zeros with its 192 latent channels (s2d-8 pixels). The "
        "2024 ComfyUI fork cannot widen EmptyLatentImage's 4 channels (a NameError in "
        "comfy.sample.fix_empty_latent_channels); upstream ComfyUI can, and either node works there."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 64, "min": 8, "max": 1024, "step": 8}),
                "height": ("INT", {"default": 64, "min": 8, "max": 1024, "step": 8}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    def generate(self, width: int, height: int, batch_size: int):
        _toy_package()
        from toy.vae import empty_latent

        return ({"samples": empty_latent(width, height, batch_size)},)


def _pack_module(relative: str):
    """The IQA-Adapter pack's own loaded module of REPO/<relative> (its classes, not a second copy): the host
    loaded the pack under the folder's name; the training tools' copy (iqa_adapter_core) is the fallback."""
    target = (REPO / relative).resolve()
    found = sorted(
        (
            name
            for name, m in list(sys.modules.items())
            if getattr(m, "__file__", None) and Path(m.__file__).resolve() == target
        ),
        key=lambda name: name.startswith("iqa_adapter_core"),
    )
    if not found:
        from toy.errors import ToyError

        raise ToyError(f"The IQA-Adapter pack is not loaded ({relative}): this node needs the pack beside it.")
    return sys.modules[found[0]]


class IQAToyQualityNet:
    CATEGORY = "IQA-Adapter/toy"
    RETURN_TYPES = ("IQA_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = (
        "The toy world's own IQA model, toy_quality (weights/toy/toy_quality_net.safetensors): a small CNN that "
        "reads blur, impulse noise and JPEG levels of 64 px pictures; higher is better. For IQA Score, and for "
        "Reference Quality Transfer with the toy reference adapter, whose embedding taps it."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        _toy_package()
        from toy.quality_iqa import load_iqa_model

        iqa_models, metric_specs = _pack_module("guidance/iqa_models.py"), _pack_module("guidance/metric_specs.py")
        return (load_iqa_model(iqa_models, metric_specs),)


class IQAToyReferences:
    CATEGORY = "IQA-Adapter/toy"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    DESCRIPTION = (
        "Four 64 px references from one of the toy's source photos (its centred square): clean, blurred, with "
        "impulse noise and JPEG-compressed, each degradation alone at the given level (toy/patches.py's "
        "degradations, which the toy reference adapter saw in training). For Reference Quality Transfer: a "
        "batch of references conditions the latents one to one."
    )

    @classmethod
    def INPUT_TYPES(cls):
        _toy_package()
        from toy.reference_images import photo_names

        return {
            "required": {
                "photo": (photo_names(), {"default": "coffee", "tooltip": "The source photo (toy/sources.py)."}),
                "level": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Degradation level, 0 (none) to 1 (blur sigma 3 px, 15 % impulses, JPEG q5).",
                    },
                ),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Seed of the impulse noise."}),
            }
        }

    def make(self, photo: str, level: float, seed: int):
        _toy_package()
        import torch

        from toy.reference_images import references

        batch = references(photo, level, seed)
        return (torch.from_numpy(batch.astype("float32") / 255.0),)


NODE_CLASS_MAPPINGS = {
    "IQAToyCheckpoint": IQAToyCheckpoint,
    "IQAToyEmptyLatent": IQAToyEmptyLatent,
    "IQAToyQualityNet": IQAToyQualityNet,
    "IQAToyReferences": IQAToyReferences,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IQAToyCheckpoint": "Load Toy Checkpoint (IQA-Adapter toy)",
    "IQAToyEmptyLatent": "Empty Toy Latent (IQA-Adapter toy)",
    "IQAToyQualityNet": "Load Toy Quality Net (IQA-Adapter toy)",
    "IQAToyReferences": "Toy Reference Photos (IQA-Adapter toy)",
}
