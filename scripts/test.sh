#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): set up a virtualenv in .venv on the first run, install
# mmap_ninja with its dev extras under CI's constraints, then lint (ruff), type-check (mypy --strict on src/, as
# configured in pyproject.toml) and run the tests. All three always run; the script fails if any of them fails.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the long stress runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "== creating the virtualenv .venv"
  python3 -m venv .venv
fi
echo "== pip install -c constraints/ci.txt -e '.[dev]'"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints/ci.txt -e '.[dev]'

failed=()
echo "== ruff check ."
.venv/bin/python -m ruff check . || failed+=(ruff)
echo "== mypy (strict, src/)"
.venv/bin/python -m mypy || failed+=(mypy)
echo "== pytest $*"
pytest_status=0
.venv/bin/python -m pytest "$@" || pytest_status=$?
if [ "$pytest_status" -ne 0 ]; then
  failed+=("pytest (exit $pytest_status)")
fi
if [ "${#failed[@]}" -ne 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
