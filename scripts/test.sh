#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the real ComfyUI host, offline, on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/dev.sh")"
data="$("$root/scripts/prepare_test_data.sh")"  # NIQE parameters from PyPI, converted (never committed)
export IQA_TEST_DATA="$data" IQA_TEST_NIQE_MAT="$data/niqe_modelparameters.mat"
"$root/scripts/install_browser.sh" --if-wanted "$venv"  # Chromium for tests/workflows/test_browser.py (CI=true or IQA_BROWSER_TESTS=1)
cd "$root"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -q "$@"
