#!/usr/bin/env bash
# The server-level tests on upstream ComfyUI (scripts/upstream_host.sh sets it up; COMFYUI_DIR for your own
# checkout). The test process stays on the fork venv (scripts/dev.sh): only the HTTP servers the tests start
# run upstream. Run after scripts/test.sh, which covers everything on the fork.
# Usage: scripts/test_upstream.sh [pytest args]   (default: the server-level test files below)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/dev.sh")"
"$root/scripts/upstream_host.sh" >/dev/null  # fails with what to do when no upstream ComfyUI is at hand
data="$("$root/scripts/prepare_test_data.sh")"
export IQA_TEST_DATA="$data" IQA_TEST_NIQE_MAT="$data/niqe_modelparameters.mat"
cd "$root"
export IQA_HOST=upstream OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
if [[ $# -eq 0 ]]; then
  set -- tests/test_server_api.py tests/test_server_workflows.py tests/test_main_job.py tests/test_reliability_catalog.py tests/test_soak.py
fi
exec "$venv/bin/python" -m pytest -q "$@"
