#!/usr/bin/env bash
# The main job: set up (idempotent), start the real ComfyUI host headless, queue an example workflow (default:
# the quality sweep) through its HTTP prompt queue, and print the folder with the images, score plots and
# scores table. Tiny built-in model without weights; the real SDXL graph with --models DIR (or --checkpoint
# and --adapter paths). --host upstream (or fork2026) starts upstream ComfyUI (or the February 2026 one)
# instead of the PyPI fork; --server URL queues on a server that is already running. All options:
# scripts/demo.sh --help
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/dev.sh")"
exec "$venv/bin/python" "$root/scripts/run_workflow.py" "$@"
