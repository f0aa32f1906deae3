#!/usr/bin/env bash
# The browser for tests/workflows/test_browser.py: Debian's Chromium and ChromeDriver (apt) and Playwright's Python
# client, pinned in requirements/dev.txt, in the project's virtual environment. Playwright is only the
# client: it drives /usr/bin/chromium and never downloads a browser of its own. Idempotent: what is already
# there is skipped. Never fatal: when something cannot be installed it says why, and the browser tests then
# skip with that reason.
#
# Usage: scripts/install_browser.sh [VENV]              install (apt needs root, or sudo without a password)
#        scripts/install_browser.sh --if-wanted [VENV]  install only when CI=true or IQA_BROWSER_TESTS=1;
#                                                       otherwise only say whether the browser tests will skip
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if_wanted=0
if [[ "${1:-}" == "--if-wanted" ]]; then if_wanted=1; shift; fi
venv="${1:-${VENV:-$root/.venv}}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 DEBIAN_FRONTEND=noninteractive
say() { echo "install_browser: $*" >&2; }

have_browser() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }
pin="$(grep -E '^playwright==' "$root/requirements/dev.txt" | head -1)"
have_playwright() {
  [[ -n "$pin" ]] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != sys.argv[1])" \
    "${pin#playwright==}" 2>/dev/null
}

if (( if_wanted )) && [[ "${CI:-}" != "true" && "${IQA_BROWSER_TESTS:-}" != "1" ]]; then
  if [[ ! -x /usr/bin/chromium ]]; then
    say "no /usr/bin/chromium: the browser tests (tests/workflows/test_browser.py) will skip;" \
        "set IQA_BROWSER_TESTS=1 or run scripts/install_browser.sh to install Debian's chromium"
  fi
  exit 0
fi

if have_browser; then
  :
else
  apt=(apt-get)
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt=(sudo -n apt-get); else apt=(); fi
  fi
  if (( ${#apt[@]} == 0 )); then
    say "cannot install chromium: not root and no password-less sudo; the browser tests will skip"
  elif ! command -v apt-get >/dev/null; then
    say "cannot install chromium: no apt-get on this machine; the browser tests will skip"
  else
    say "installing Debian's chromium and chromium-driver"
    pkgs=(chromium chromium-driver)
    if ! "${apt[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
      # a fresh machine has no package lists yet
      "${apt[@]}" update -qq >/dev/null 2>&1 || say "apt-get update failed"
      "${apt[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
        || say "apt-get install ${pkgs[*]} failed; the browser tests will skip"
    fi
  fi
fi

if ! have_playwright; then
  if [[ -z "$pin" ]]; then
    say "requirements/dev.txt pins no playwright; the browser tests will skip"
  else
    # dev.txt pins playwright and its one dependency (greenlet): nothing else, never torch
    greenlet="$(grep -E '^greenlet==' "$root/requirements/dev.txt" | head -1)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$pin" ${greenlet:+"$greenlet"} >&2 \
      || say "pip install $pin failed; the browser tests will skip"
  fi
fi

if have_browser && have_playwright; then
  say "ready: $(/usr/bin/chromium --version 2>/dev/null | head -1), $pin"
fi
exit 0
