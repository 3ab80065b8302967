#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): set up a virtualenv in .venv on the first run, install
# mmap_ninja with its dev extras under CI's constraints, then lint (ruff), type-check (mypy --strict on src/, as
# configured in pyproject.toml) and run the tests. All three always run; the script fails if any of them fails.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the long stress runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The virtualenv's python: .venv/bin/python on Linux and macOS, .venv/Scripts/python.exe on Windows (Git Bash).
if [ "${OS:-}" = "Windows_NT" ]; then
  venv_python=.venv/Scripts/python.exe
  base_python=python
else
  venv_python=.venv/bin/python
  base_python=python3
fi
if [ ! -x "$venv_python" ]; then
  echo "== creating the virtualenv .venv"
  "$base_python" -m venv .venv
fi
echo "== pip install -c constraints/ci.txt -e '.[dev]'"
"$venv_python" -m pip install -q --disable-pip-version-check -c constraints/ci.txt -e '.[dev]'

failed=()
echo "== ruff check --no-cache ."
"$venv_python" -m ruff check --no-cache . || failed+=(ruff)
echo "== mypy (strict, src/)"
"$venv_python" -m mypy || failed+=(mypy)
echo "== pytest $*"
pytest_status=0
"$venv_python" -m pytest "$@" || pytest_status=$?
if [ "$pytest_status" -ne 0 ]; then
  failed+=("pytest (exit $pytest_status)")
fi
if [ "${#failed[@]}" -ne 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
