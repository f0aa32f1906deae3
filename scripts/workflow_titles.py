"""Titles and one-line descriptions of the example workflows in the editor's template browser.

ComfyUI lists a custom node pack's example_workflows/ as templates under their file names. The current
frontend (comfyui-frontend-package 1.27, pinned by ComfyUI 0.3.64) looks a template's title up in its
translations first, at templateWorkflows.template.<pack folder>.<file name>, and custom nodes add
translations from locales/<lang>/main.json. The key holds the pack's folder name in custom_nodes/, which
depends on how it was installed, so the file carries the titles under each name an install gives it.
scripts/workflow_build.py writes and checks that file.
"""
from __future__ import annotations

from typing import Mapping

# The folder names the pack gets: this repository's own scripts and tests (scripts/workflow_host.py), a
# git clone of the repository, the Comfy registry id (pyproject.toml [project] name).
FOLDER_NAMES = ("comfyui_iqa_adapter", "comfyui-iqa-adapter", "iqa-adapter")
CATEGORY = "IQA-Adapter"

# file name (without .json) -> (title, description)
TITLES: dict[str, tuple[str, str]] = {
    "sdxl_quality_condition_t2i": ("Quality Condition: text to image (SDXL)",
                                   "A high quality target (percentile 99 of every metric) for one SDXL image."),
    "sdxl_quality_sweep": ("Quality sweep p1 to p99 (SDXL)",
                           "One prompt and seed at five quality targets in one batch, scored with IQA Score."),
    "sdxl_degradation": ("Controlled degradation (SDXL)",
                         "Low targets: lower the technical or the aesthetic metric alone, or both."),
    "sdxl_reference_quality_transfer": ("Reference quality transfer, img2img (SDXL)",
                                        "Take the quality traits of a distorted reference photo, not its content."),
    "sdxl_gradient_guidance": ("IQA Gradient Guidance (SDXL)",
                               "The same seed with and without guidance by an IQA metric's gradient."),
    "sdxl_quality_condition_with_guidance": ("Quality Condition plus guidance (SDXL)",
                                             "Quality Condition at p99 stacked with a light IQA Gradient Guidance."),
}


def _key(text: str) -> str:
    """The frontend's normalizeI18nKey: dots would split the translation key."""
    return text.replace(".", "_")


def locale_messages(names: list[str]) -> dict:
    """locales/en/main.json for these workflow files; a file without a title is an error (say what to add)."""
    missing = [n for n in names if n not in TITLES]
    if missing:
        raise KeyError(f"example workflows without a template title: {missing}; add them to TITLES in {__file__}")
    titles: Mapping[str, str] = {_key(n): TITLES[n][0] for n in sorted(names)}
    descriptions: Mapping[str, str] = {_key(n): TITLES[n][1] for n in sorted(names)}
    folders = [_key(f) for f in FOLDER_NAMES]
    return {"templateWorkflows": {"category": {f: CATEGORY for f in folders},
                                  "template": {f: dict(titles) for f in folders},
                                  "templateDescription": {f: dict(descriptions) for f in folders}}}
