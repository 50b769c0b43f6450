#!/usr/bin/env bash
# Set up everything the test suite needs, from scratch: a venv in .venv with flux-nb and all its
# extras (torch for the diffusers engine tests), plus Debian's chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive  # apt-get must never stop to ask

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so the `local` extra's torch requirement is already met. Where pip finds a
# CPU-only wheel for torch==2.13.0 (as on the project's machines) this is the CPU build; elsewhere
# the same pin may resolve to a CUDA build, several GB.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,local,browser,docs,bench]"

# Chromium for the real-browser panel test (Debian package; Playwright drives it, no download).
# Locally a missing browser only skips that test; on CI (CI=true) it is an error, so CI can never go
# green without having run the browser test.
no_chromium() {
  if [ "${CI:-}" = "true" ]; then
    echo "error: $1; CI needs chromium for the browser test" >&2
    exit 1
  fi
  echo "$1: browser tests will be skipped"
}
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || no_chromium "chromium could not be installed"
  else
    no_chromium "chromium not found and cannot be installed here"
  fi
fi
