#!/usr/bin/env bash
# The server-level tests on upstream ComfyUI (scripts/upstream_host.sh sets it up; COMFYUI_DIR for your own
# checkout). The test process stays on the fork venv (scripts/dev.sh): only the HTTP servers the tests start
# run upstream. Run after scripts/test.sh, which covers everything on the fork.
# Usage: scripts/test_upstream.sh [pytest options] [test paths]   (no paths: the server-level files below, and
#        the browser suite when CI=true or IQA_BROWSER_TESTS=1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/dev.sh")"
"$root/scripts/upstream_host.sh" >/dev/null  # fails with what to do when no upstream ComfyUI is at hand
data="$("$root/scripts/prepare_test_data.sh")"
export IQA_TEST_DATA="$data" IQA_TEST_NIQE_MAT="$data/niqe_modelparameters.mat"
cd "$root"
export IQA_HOST=upstream OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
# A test path among the arguments (not the value of an option such as --deselect): run what was asked.
prev=""
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" && ! "$prev" =~ ^(--deselect|--ignore|--ignore-glob|-k|-m|-p|-c|--rootdir)$ ]]; then
    exec "$venv/bin/python" -m pytest -q "$@"
  fi
  prev="$arg"
done
# The browser suite too where scripts/test.sh runs it (CI=true or IQA_BROWSER_TESTS=1): upstream's own editor,
# the frontend its requirements.txt pins (COMFYUI_FRONT_END_ROOT for another, see docs/host-compatibility.md).
browser=()
if [[ "${CI:-}" == "true" || "${IQA_BROWSER_TESTS:-}" == "1" ]]; then
  "$root/scripts/install_browser.sh" --if-wanted "$venv"
  browser=(tests/workflows/test_browser.py)
fi
exec "$venv/bin/python" -m pytest -q "$@" tests/server/test_http_api.py tests/workflows/test_example_workflows.py tests/server/test_main_job.py \
  tests/reliability/test_reliability_catalog.py tests/reliability/test_soak.py tests/workflows/test_same_noise_sweep.py "${browser[@]}"
