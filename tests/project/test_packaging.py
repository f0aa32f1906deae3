"""Packaging for the Comfy Registry and the Manager: pyproject metadata, requirements that do not fight a
user's ComfyUI install, the install command the README gives, and no pip calls at run time."""

from __future__ import annotations

import re

import conftest
import tomllib

REPO = conftest.REPO
# Packages a ComfyUI install owns: a node pack must not pin or pull them.
HOST_OWNED = {
    "torch",
    "torchvision",
    "torchaudio",
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "huggingface_hub",
    "protobuf",
    "opencv-python",
    "safetensors==",
    "numpy==",
    "pillow",
    "comfyui",
}


def requirement_lines() -> list[str]:
    return [
        line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_pyproject_is_ready_for_the_registry():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower(), "registry names leave out 'ComfyUI'"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (REPO / project["license"]["file"]).is_file() and "GNU GENERAL PUBLIC LICENSE" in (
        REPO / "LICENSE"
    ).read_text()[:200]
    assert project["urls"]["Repository"].startswith("https://")
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert comfy["DisplayName"] == "IQA-Adapter"
    assert project["dependencies"] == requirement_lines(), "pyproject dependencies and requirements.txt differ"


def test_requirements_leave_the_host_alone():
    for line in requirement_lines():
        name = re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower()
        assert name not in HOST_OWNED and not any(line.lower().startswith(h) for h in HOST_OWNED if h.endswith("==")), (
            line
        )
        assert "==" not in line, f"{line}: exact pins fight other packs; use a lower bound"
        assert name != "pyiqa", "pyiqa goes in with --no-deps (its declared dependencies upgrade transformers & co.)"


def test_readme_install_command_matches_the_tested_versions():
    """The --no-deps line users run installs the versions requirements/iqa.txt tests with."""
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements" / "iqa.txt").read_text(), flags=re.M))
    readme = (REPO / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "pip install --no-deps" in ln)
    for pkg in ("pyiqa", "facexlib"):
        assert f"{pkg}=={pinned[pkg]}" in line, (pkg, line)
    assert line.split("#")[0].strip() in (REPO / "requirements.txt").read_text()


def test_no_pip_calls_at_run_time():
    """Shipped code never installs anything: no pip, no subprocess package managers."""
    shipped = [REPO / "__init__.py"] + [p for d in ("adapter", "guidance", "nodes") for p in (REPO / d).rglob("*.py")]
    pattern = re.compile(r"pip\s+install|pip\._internal|ensurepip|[\"']-m[\"'],\s*[\"']pip[\"']|subprocess", re.I)
    offenders = [str(p.relative_to(REPO)) for p in shipped if pattern.search(p.read_text())]
    assert offenders == []


def test_train_extra_names_what_requirements_train_pins():
    """pyproject's [train] extra (what a user installs) and requirements/train.txt (what CI installs) name
    the same packages, and none of them is one that the host pins to a version of its own."""
    import re

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    pinned = [
        ln.split("==")[0]
        for ln in (REPO / "requirements" / "train.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert sorted(re.split(r"[<>=!~ ]", e)[0].lower() for e in extra) == sorted(p.lower() for p in pinned)
    host = {
        ln.split("==")[0].lower() for ln in (REPO / "requirements" / "host.txt").read_text().splitlines() if "==" in ln
    }
    assert not host & {p.lower() for p in pinned}, "a training package is also pinned by the host list"
