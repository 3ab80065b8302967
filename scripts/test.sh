#!/usr/bin/env bash
# Set up a virtualenv in .venv (first run only), install mmap_ninja with its test extras, run the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the long stress runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
