"""Load GenzIQA: a GenzIQA file on a MODEL, CLIP and VAE, as an IQA_MODEL for IQA Score and guidance."""

from __future__ import annotations

import os

from ..guidance.genziqa import GenzIQAScorer, load_genziqa
from ..guidance.genziqa.iqa_model import GenzIQAModel
from . import host


class LoadGenzIQA:
    DESCRIPTION = (
        "Loads a GenzIQA file from models/genziqa: no-reference image quality read from the connected diffusion "
        "model's cross-attention with learned 'good photo' / 'bad photo' prompts (De et al., arXiv 2406.04654). "
        "The file names the base model family it was made for (the authors used SD 2.1-base); another family is "
        "an error. Higher scores are better. For IQA Score, and for IQA Gradient Guidance, which it steers from "
        "the latent with no decode. The MODEL given is not changed."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("IQA_MODEL",)
    RETURN_NAMES = ("iqa_model",)
    OUTPUT_TOOLTIPS = ("The GenzIQA scorer, for IQA Score or IQA Gradient Guidance.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The base diffusion model the GenzIQA file was made for."}),
                "clip": ("CLIP", {"tooltip": "That model's text encoder (the learned prompts go through it)."}),
                "vae": ("VAE", {"tooltip": "That model's VAE (images are encoded with it)."}),
                "genziqa_name": (
                    host.model_file_list(host.GENZIQA_FOLDER),
                    {"tooltip": "A GenzIQA .safetensors file in models/genziqa."},
                ),
            },
        }

    def load(self, model, clip, vae, genziqa_name: str):
        path = host.model_file_path(host.GENZIQA_FOLDER, genziqa_name)
        file = load_genziqa(path)
        name = "genziqa:" + os.path.splitext(os.path.basename(genziqa_name))[0]
        return (GenzIQAModel(GenzIQAScorer(model, clip, vae, file), name),)


NODE_CLASS_MAPPINGS = {"IQALoadGenzIQA": LoadGenzIQA}
NODE_DISPLAY_NAME_MAPPINGS = {"IQALoadGenzIQA": "Load GenzIQA"}
