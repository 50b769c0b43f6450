#!/usr/bin/env bash
# Set up everything the test suite needs, from scratch: a venv in .venv with flux-nb and all its
# extras (CPU torch for the diffusers engine tests), plus Debian's chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: the `local` extra's torch requirement is then already met, so pip
# does not pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,local,browser,docs,bench]"

# Chromium for the real-browser panel test (Debian package; Playwright drives it, no download).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null || echo "chromium not installed: browser tests will be skipped"
  else
    echo "chromium not found and cannot be installed here: browser tests will be skipped"
  fi
fi
