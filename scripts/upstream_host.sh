#!/usr/bin/env bash
# Upstream ComfyUI as a second test host, next to the PyPI fork that scripts/dev.sh installs. Users run
# upstream, so the server-level tests also run there (scripts/test_upstream.sh).
# Prints the ComfyUI folder; its Python is <folder>/.venv/bin/python (or COMFYUI_PYTHON, see below).
#
#   scripts/upstream_host.sh     unpack $COMFYUI_TARBALL (default /work/shared/hosts/comfyui-0.3.64.tar.gz)
#                                into .hosts/ (git-ignored) and give it a venv of its own: torch 2.14.1 +
#                                torchvision 0.29.1 pinned first, then ComfyUI's requirements.txt without
#                                torchaudio (no build for this torch), requests (imported, not declared),
#                                then this pack's requirements the way a user installs them, and
#                                scikit-image (the toy world's photos, for the demo's and tests' toy
#                                Reference Quality Transfer graph; pinned as requirements/train.txt pins it).
#   COMFYUI_DIR=/my/ComfyUI scripts/upstream_host.sh
#                                use your own checkout: nothing is unpacked or installed; its Python is
#                                COMFYUI_PYTHON, else <dir>/.venv or <dir>/venv. It needs this pack's
#                                requirements (requirements.txt, then pyiqa --no-deps) installed already.
# Idempotent: a stamp in the venv holds the hash of the inputs, so a second run costs a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  dir="$(cd "$COMFYUI_DIR" 2>/dev/null && pwd)" || { echo "upstream_host: COMFYUI_DIR=$COMFYUI_DIR is not a folder" >&2; exit 1; }
  [[ -f "$dir/main.py" && -d "$dir/comfy" ]] || { echo "upstream_host: $dir has no main.py and comfy/: not a ComfyUI checkout" >&2; exit 1; }
  py="${COMFYUI_PYTHON:-}"
  for cand in "$dir/.venv/bin/python" "$dir/venv/bin/python"; do [[ -n "$py" ]] || { [[ -x "$cand" ]] && py="$cand"; }; done
  [[ -n "$py" ]] || { echo "upstream_host: no venv in $dir (.venv or venv); set COMFYUI_PYTHON to the Python that runs it" >&2; exit 1; }
  "$py" -c "import torch, aiohttp" 2>/dev/null || { echo "upstream_host: $py cannot import torch and aiohttp: install ComfyUI's requirements there" >&2; exit 1; }
  echo "$dir"; exit 0
fi

tarball="${COMFYUI_TARBALL:-/work/shared/hosts/comfyui-0.3.64.tar.gz}"
name="$(basename "$tarball" .tar.gz)"  # comfyui-0.3.64 -> folder ComfyUI-0.3.64
dir="$root/.hosts/ComfyUI-${name#comfyui-}"
venv="$dir/.venv"
stamp="$venv/.iqa-adapter-stamp"
source "$root/scripts/host_stamp.sh"
hint="Set COMFYUI_DIR to a ComfyUI checkout (with its venv), or COMFYUI_TARBALL to a ComfyUI source archive."
want="$(host_stamp_wanted upstream_host "$tarball" "$stamp" "$hint" "$root/requirements.txt" \
  "$root/requirements/iqa.txt" "${BASH_SOURCE[0]}" "$root/scripts/host_stamp.sh")" || exit 1
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$dir"; exit 0
fi

rm -rf "$dir"
mkdir -p "$root/.hosts"
tmp="$(mktemp -d "$root/.hosts/unpack.XXXXXX")"
tar xzf "$tarball" -C "$tmp"
top="$(ls "$tmp")"
[[ "$(echo "$top" | wc -l)" == 1 && -f "$tmp/$top/main.py" ]] || { echo "upstream_host: $tarball does not hold one ComfyUI folder" >&2; exit 1; }
mv "$tmp/$top" "$dir"
rmdir "$tmp"

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 >&2
# torch and torchvision are already there; pinning them again keeps pip from choosing another torch.
grep -v -E '^\s*torchaudio\b' "$dir/requirements.txt" > "$venv/comfyui-requirements.txt"
"${pip[@]}" -r "$venv/comfyui-requirements.txt" torch==2.14.1 torchvision==0.29.1 requests >&2
"${pip[@]}" -r "$root/requirements.txt" torch==2.14.1 torchvision==0.29.1 >&2
"${pip[@]}" --no-deps -r "$root/requirements/iqa.txt" >&2
"${pip[@]}" "$(grep -E '^scikit-image==' "$root/requirements/train.txt")" torch==2.14.1 torchvision==0.29.1 >&2
echo "$want" > "$stamp"
echo "$dir"
