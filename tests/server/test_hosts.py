"""Choosing the host (scripts/comfy_host.py, scripts/upstream_host.sh, scripts/fork2026_host.sh) without starting
one: each host is started the way its users start it, and a missing host is an error that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import comfy_host  # noqa: E402
import conftest
import pytest
import server_host  # noqa: F401  (puts scripts/ on sys.path)
from workflow_host import HostServer  # noqa: E402

SETUP = conftest.REPO / "scripts" / "upstream_host.sh"
SETUP_2026 = conftest.REPO / "scripts" / "fork2026_host.sh"


def fake_upstream(root: Path) -> Path:
    """A folder shaped like a ComfyUI checkout with a venv: enough for the setup script to accept it."""
    folder = root / "ComfyUI"
    (folder / "comfy").mkdir(parents=True)
    (folder / "main.py").write_text("")
    (folder / "comfyui_version.py").write_text('__version__ = "9.8.7"\n')
    (folder / ".venv" / "bin").mkdir(parents=True)
    python = folder / ".venv" / "bin" / "python"  # this venv's Python (a wrapper: a symlink would lose the venv)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return folder


def test_fork_starts_as_the_package_console_entry(tmp_path):
    cmd = comfy_host.fork().server_command(tmp_path, 8190)
    assert cmd[1:3] == ["-m", "comfy.cmd.main"] and cmd[cmd.index("--cwd") + 1] == str(tmp_path)
    assert "--disable-known-models" in cmd and "--cpu" in cmd
    assert "--cpu" not in comfy_host.fork().server_command(tmp_path, 8190, gpu=True)


def test_upstream_starts_main_py_on_the_workspace_with_its_own_python(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYUI_PYTHON", raising=False)
    folder = fake_upstream(tmp_path)
    host = comfy_host.upstream(folder)
    assert host.python == str(folder / ".venv" / "bin" / "python") and host.version() == "9.8.7"
    cmd = host.server_command(tmp_path / "ws", 8191)
    assert cmd[:2] == [host.python, str(folder / "main.py")]
    assert cmd[cmd.index("--base-directory") + 1] == str(tmp_path / "ws"), (
        "custom_nodes, models, input, output in the workspace"
    )
    assert {"--cpu", "--disable-api-nodes", "--disable-auto-launch"} <= set(cmd)
    assert str(tmp_path / "ws") in cmd[cmd.index("--database-url") + 1], "not the shared folder's database"
    argv, env = host.helper_command(Path("helper.py"), "x")
    assert argv[0] == host.python and argv[-1] == "--cpu" and env["PYTHONPATH"].split(os.pathsep)[0] == str(folder)


def test_fork2026_starts_as_the_package_console_entry_from_its_venv(tmp_path):
    venv = tmp_path / "venv"
    for dist in ("comfyui-0.12.1", "comfyui_frontend_package-1.58.1", "comfyui_embedded_docs-0.5.15"):
        (venv / "lib" / "python3.11" / "site-packages" / f"{dist}.dist-info").mkdir(parents=True)
    host = comfy_host.Host("fork2026", str(venv / "bin" / "python"), venv)
    assert host.current and not host.upstream
    assert (host.version(), host.frontend_version()) == ("0.12.1", "1.58.1"), "what /system_stats and the page report"
    cmd = host.server_command(tmp_path / "ws", 8192)
    assert cmd[:3] == [host.python, "-m", "comfy.cmd.main"] and cmd[cmd.index("--cwd") + 1] == str(tmp_path / "ws")
    assert {"--cpu", "--disable-api-nodes", "--disable-known-models"} <= set(cmd)
    assert str(tmp_path / "ws") in cmd[cmd.index("--database-url") + 1], "not the user's shared database"
    argv, env = host.helper_command(Path("helper.py"), "x")
    assert argv[0] == host.python and argv[-1] == "--cpu" and env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")


def test_fork2026_setup_says_what_to_do_without_its_archive(tmp_path):
    env = dict(
        os.environ,
        COMFYUI_2026_TARBALL=str(tmp_path / "comfyui-hiddenswitch-missing.tar.gz"),
        FORK2026_VENV=str(tmp_path / "venv"),  # not the one .hosts/ may hold, which is kept when the archive moves
    )
    proc = subprocess.run(["bash", str(SETUP_2026)], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "is missing. Copy comfyui-hiddenswitch-0.12.1.tar.gz" in proc.stderr, proc.stderr
    assert not (tmp_path / "venv").exists()


def test_setup_script_uses_comfyui_dir_as_given(tmp_path):
    folder = fake_upstream(tmp_path)
    env = dict(os.environ, COMFYUI_DIR=str(folder))
    proc = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(folder)
    assert not (conftest.REPO / ".hosts" / "ComfyUI").exists()


@pytest.mark.parametrize(
    "given, says",
    [
        ("missing_archive", "is missing. Set COMFYUI_DIR"),
        ("not_a_checkout", "not a ComfyUI checkout"),
        ("no_venv", "set COMFYUI_PYTHON"),
    ],
)
def test_setup_script_says_what_to_do(tmp_path, given, says):
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "COMFYUI_PYTHON")}
    if given == "missing_archive":
        env["COMFYUI_TARBALL"] = str(tmp_path / "comfyui-0.0.0-missing.tar.gz")
    elif given == "not_a_checkout":
        env["COMFYUI_DIR"] = str(tmp_path)
    else:
        folder = fake_upstream(tmp_path)
        (folder / ".venv" / "bin" / "python").unlink()
        env["COMFYUI_DIR"] = str(folder)
    proc = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


def test_unknown_host_name_is_refused(monkeypatch):
    monkeypatch.setenv("IQA_HOST", "comfy-2")
    with pytest.raises(ValueError, match="use one of fork, upstream, fork2026"):
        comfy_host.from_env()


def test_attach_takes_an_address_and_starts_nothing():
    server = HostServer.attach("127.0.0.1:8188")
    assert server.base == "http://127.0.0.1:8188" and server.attached and server.workspace is None
    server.stop()  # a no-op: nothing was started
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        HostServer.attach("ftp://somewhere")
