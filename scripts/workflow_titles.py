"""The name the editor's template browser gives this pack's example workflows (locales/en/main.json).

ComfyUI lists a custom node pack's example_workflows/ as templates, grouped under the pack's folder name in
custom_nodes/. The current frontend (comfyui-frontend-package 1.27.10, pinned by ComfyUI 0.3.64, and 1.58.1)
looks that group's title up in its translations, templateWorkflows.category.<folder name>, and custom nodes
add translations from locales/<lang>/main.json. A template's own title and description are its file name in
both versions (docs/host-compatibility.md), so there is nothing to translate for them.
The folder name depends on how the pack was installed, so the file names each one an install gives.
scripts/workflow_build.py writes and checks the file.
"""
from __future__ import annotations

# The folder names the pack gets: this repository's own scripts and tests (scripts/workflow_host.py), a
# git clone of the repository, the Comfy registry id (pyproject.toml [project] name).
FOLDER_NAMES = ("comfyui_iqa_adapter", "comfyui-iqa-adapter", "iqa-adapter")
CATEGORY = "IQA-Adapter"


def _key(text: str) -> str:
    """The frontend's normalizeI18nKey: a dot would split the translation key."""
    return text.replace(".", "_")


def locale_messages() -> dict:
    """locales/en/main.json: the template group's title under every folder name."""
    return {"templateWorkflows": {"category": {_key(f): CATEGORY for f in FOLDER_NAMES}}}
