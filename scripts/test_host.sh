#!/usr/bin/env bash
# The server-level tests with their servers on another host than the PyPI fork: upstream ComfyUI 0.3.64
# (scripts/upstream_host.sh; COMFYUI_DIR for your own checkout) or the February 2026 ComfyUI 0.12.1
# (scripts/fork2026_host.sh). The test process stays on the fork venv (scripts/dev.sh): only the HTTP servers
# the tests start run on the host named. Run after scripts/test.sh, which covers everything on the fork.
# Usage: scripts/test_host.sh upstream|fork2026 [pytest options] [test paths]
#        (no paths: the server-level files below, and the browser suite when CI=true or IQA_BROWSER_TESTS=1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:-}"
case "$kind" in
  upstream) setup="$root/scripts/upstream_host.sh" ;;
  fork2026) setup="$root/scripts/fork2026_host.sh" ;;
  *) echo "test_host: name the host first: scripts/test_host.sh upstream|fork2026 [pytest args]" >&2; exit 2 ;;
esac
shift
venv="$("$root/scripts/dev.sh")"
"$setup" >/dev/null  # fails with what to do when the host's archive (or COMFYUI_DIR) is not at hand
data="$("$root/scripts/prepare_test_data.sh")"
export IQA_TEST_DATA="$data" IQA_TEST_NIQE_MAT="$data/niqe_modelparameters.mat"
cd "$root"
export IQA_HOST="$kind" OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
# A test path among the arguments (not the value of an option such as --deselect): run what was asked.
prev=""
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" && ! "$prev" =~ ^(--deselect|--ignore|--ignore-glob|-k|-m|-p|-c|--rootdir)$ ]]; then
    exec "$venv/bin/python" -m pytest -q "$@"
  fi
  prev="$arg"
done
# The browser suite too where scripts/test.sh runs it (CI=true or IQA_BROWSER_TESTS=1), in the editor this host
# serves: the frontend upstream pins, or the one fork2026 installs (COMFYUI_FRONT_END_ROOT for another).
browser=()
if [[ "${CI:-}" == "true" || "${IQA_BROWSER_TESTS:-}" == "1" ]]; then
  "$root/scripts/install_browser.sh" --if-wanted "$venv"
  browser=(tests/workflows/test_browser.py)
fi
exec "$venv/bin/python" -m pytest -q "$@" tests/server/test_http_api.py tests/workflows/test_example_workflows.py tests/server/test_main_job.py \
  tests/reliability/test_reliability_catalog.py tests/reliability/test_soak.py tests/workflows/test_same_noise_sweep.py "${browser[@]}"
