#!/usr/bin/env bash
# The main job: set up (idempotent), start the real ComfyUI host, queue the quality-sweep workflow through
# its HTTP prompt queue, and print the folder with the images and scores. Options: scripts/run_workflow.py --help
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/dev.sh")"
exec "$venv/bin/python" "$root/scripts/run_workflow.py" "$@"
