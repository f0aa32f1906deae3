"""The names the editor's template browser gives this pack's example workflows: each example's title, which
is its file name, and the group title (locales/en/main.json).

ComfyUI lists a custom node pack's example_workflows/*.json as templates, grouped under the pack's folder name
in custom_nodes/. The current frontend (comfyui-frontend-package 1.27.10, pinned by ComfyUI 0.3.64, and 1.58.1)
looks that group's title up in its translations, templateWorkflows.category.<folder name>, and custom nodes
add translations from locales/<lang>/main.json. A template's own title is its file name, with no translation
lookup, and its description is the same name with '-' and '_' turned into spaces; the card's thumbnail is the
.jpg of the same name (docs/host-compatibility.md). So each example's file is named by its human title,
TITLES below, the one place that maps a workflow's id (slug) to its title.

The slug stays the id everywhere else: scripts/workflow_build.py's WORKFLOWS, the API twins
scripts/prompts/<slug>.json, scripts/run_workflow.py's --workflow (which also takes the title), the tests'
parameter ids and screenshots. A new example: a builder in workflow_build.WORKFLOWS and a line here.
The folder name depends on how the pack was installed, so the file names each one an install gives.
scripts/workflow_build.py writes and checks the files.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"

# The folder names the pack gets: this repository's own scripts and tests (scripts/workflow_host.py), a
# git clone of the repository, the Comfy registry id (pyproject.toml [project] name).
FOLDER_NAMES = ("comfyui_iqa_adapter", "comfyui-iqa-adapter", "iqa-adapter")
CATEGORY = "IQA-Adapter"

# slug -> title: example_workflows/<title>.json and <title>.jpg. Short, what it does first and the base model
# last, as a user scans a template list; the pack's nodes by their display names; whole on a card: two lines
# in 1.27.10, one line (about 33 characters) in 1.58.1 at the browser suite's 1600 px window, which checks it
# (docs/host-compatibility.md); safe as a file name and in the URL that the frontend builds without encoding
# it (/api/workflow_templates/<folder>/<title>.jpg).
TITLES: dict[str, str] = {
    "sdxl_quality_condition_t2i": "Quality Condition (SDXL)",
    "sdxl_quality_sweep": "Quality sweep p1 to p99 (SDXL)",
    "sdxl_degradation": "Controlled degradation (SDXL)",
    "sdxl_reference_quality_transfer": "Reference Quality Transfer (SDXL)",
    "sdxl_gradient_guidance": "IQA Gradient Guidance (SDXL)",
    "sdxl_quality_condition_with_guidance": "Quality Condition, guided (SDXL)",
    "sd2_genziqa_score": "Judge quality with GenzIQA (SD2)",
    "sdxl_best_of_n": "Best 2 of 8 at p99 (SDXL)",
    "sdxl_regional_quality": "Regional quality (SDXL)",
    "sdxl_block_weights": "Quality by UNet block (SDXL)",
}

# Not in a title: path separators and what Windows forbids in file names; what would cut or change the
# unencoded URL ('#' fragment, '?' query, '%' escape, '+' read as a space by some servers, '&'); '-' and '_',
# which the frontend turns into spaces in the card's description, so that it would differ from the title.
UNSAFE = set("/\\:*?\"<>|#%&+'`-_")


def unsafe_characters(title: str) -> list[str]:
    """The characters of `title` that may not be in a file name here (empty when it is fine)."""
    bad = sorted({c for c in title if c in UNSAFE or ord(c) < 32})
    if title != title.strip() or title.endswith("."):
        bad.append("leading/trailing space or trailing dot")
    return bad


def example_path(slug: str, suffix: str = ".json") -> Path:
    """example_workflows/<title><suffix> of the workflow `slug` (.json: the UI workflow, .jpg: its thumbnail)."""
    return EXAMPLES / f"{TITLES[slug]}{suffix}"


def slug_of(name: str) -> str | None:
    """The slug of an example named by its slug, title or file name (None when there is no such example)."""
    stem = Path(name).stem if name.endswith((".json", ".jpg")) else name
    if stem in TITLES:
        return stem
    return next((slug for slug, title in TITLES.items() if title == stem), None)


def example_slugs() -> list[str]:
    """The slugs whose UI workflow file exists, sorted (a workflow whose nodes are not in yet has none)."""
    return sorted(slug for slug in TITLES if example_path(slug).is_file())


def _key(text: str) -> str:
    """The frontend's normalizeI18nKey: a dot would split the translation key."""
    return text.replace(".", "_")


def locale_messages() -> dict:
    """locales/en/main.json: the template group's title under every folder name."""
    return {"templateWorkflows": {"category": {_key(f): CATEGORY for f in FOLDER_NAMES}}}
