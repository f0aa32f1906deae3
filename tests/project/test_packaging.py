"""Packaging for the Comfy Registry and the Manager: pyproject metadata, requirements that do not fight a
user's ComfyUI install, the install command the README gives, and no pip calls at run time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import conftest
import pytest
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


# -- the registry archive: `comfy node pack` and `comfy node validate` (comfy-cli, requirements/dev.txt) ----------

# training/ and requirements/ ship: the README's "Make your own adapter" runs python -m training from the
# installed pack, with requirements/train.txt and requirements/host.txt.
RUNTIME = (
    "__init__.py", "nodes/", "adapter/", "guidance/", "web/", "locales/", "example_workflows/", "training/",
    "requirements/",
)  # fmt: skip
DEVELOPER_ONLY = ("tests/", "bench/", "scripts/", ".ci/", "toy/", "weights/toy/")


def _comfy(args: list[str], cwd: Path, home: Path, netlog: Path) -> subprocess.CompletedProcess:
    """comfy-cli offline and non-interactive: no telemetry (DO_NOT_TRACK), its config in a temporary home,
    and tests/netguard on (conftest's PYTHONPATH) recording into netlog any connection it tries."""
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), DO_NOT_TRACK="1")
    env["IQA_NETGUARD_DIR"] = str(netlog)
    comfy = Path(sys.executable).parent / "comfy"
    return subprocess.run(
        [str(comfy), "--skip-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict:
    """The working tree as it would be committed (tracked and new files, not ignored ones) in a fresh git
    repository, packed with `comfy node pack`: what the registry would get."""
    root = tmp_path_factory.mktemp("pack")
    src, home, netlog = root / "src", root / "home", root / "net"
    for d in (src, home, netlog):
        d.mkdir()
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = [f for f in listed.split("\0") if f and (REPO / f).is_file()]
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    subprocess.run(["git", "add", "-A"], cwd=src, check=True)
    done = _comfy(["node", "pack"], src, home, netlog)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(src / "node.zip") as z:
        names = set(z.namelist())
    return {"src": src, "home": home, "net": netlog, "files": files, "names": names}


def test_the_registry_archive_holds_what_a_user_runs(packed):
    names, files = packed["names"], packed["files"]
    assert not [n for n in names if n.startswith(DEVELOPER_ONLY)], "developer-only files in the archive"
    runtime = {f for f in files if f.startswith(RUNTIME)} | {
        "requirements.txt",
        "pyproject.toml",
        "README.md",
        "LICENSE",
    }
    assert runtime - names == set(), "files a user runs are missing from the archive"
    assert any(n.startswith("nodes/") and n.endswith(".py") for n in names) and "web/icon.svg" in names
    assert {f for f in files if f.startswith("weights/") and f.endswith(".json") and "/toy/" not in f} <= names
    assert len(names) < len(files) * 2 // 3, f"{len(names)} of {len(files)} files: the ignore list does little"


def test_the_icon_is_a_file_the_archive_ships():
    icon = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    repository = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), icon
    path = REPO / icon.removeprefix(prefix)
    assert path.is_file() and path.stat().st_size < 4096, path
    ElementTree.parse(path)  # well-formed SVG


def test_comfy_node_validate_passes_offline(packed):
    done = _comfy(["node", "validate"], packed["src"], packed["home"], packed["net"])
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "All validation checks passed" in out and "Security warnings" not in out, out
    attempts = [line for f in packed["net"].glob("*.jsonl") for line in f.read_text().splitlines()]
    assert attempts == [], f"comfy-cli tried to reach the network: {attempts[:2]}"
