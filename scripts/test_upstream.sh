#!/usr/bin/env bash
# The server-level tests (and, under CI=true or IQA_BROWSER_TESTS=1, the browser suite) with their servers on
# upstream ComfyUI 0.3.64: scripts/test_host.sh upstream, kept under this name for the commands in the docs.
# Usage: scripts/test_upstream.sh [pytest options] [test paths]
exec "$(dirname "${BASH_SOURCE[0]}")/test_host.sh" upstream "$@"
