"""The tree passes ruff's lint and format checks (pyproject.toml [tool.ruff]; ruff comes with
requirements/dev.txt). To fix a failure: `.venv/bin/ruff format . && .venv/bin/ruff check --fix .`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


def _ruff(*args: str) -> subprocess.CompletedProcess:
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.fail("ruff is not installed: scripts/dev.sh installs it from requirements/dev.txt")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_lint_passes():
    r = _ruff("check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_clean():
    r = _ruff("format", "--check", "--no-cache", ".")
    assert r.returncode == 0, "files ruff would reformat (run `.venv/bin/ruff format .`):\n" + r.stdout + r.stderr
