"""Running one benchmark row in a fresh process: the epoch harnesses (bench_epochs.py, bench_lm_batches.py) start
each row as ``python SCRIPT --child ...``, which prints one ``RESULT {json}`` line; a row that fails or hangs comes
back as ``{"error": ...}`` so that the table still prints."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run_child(command: list[str], src: Path, timeout: float) -> dict[str, Any]:
    """Run ``command`` with ``src`` (the tree holding mmap_ninja) first on PYTHONPATH, from the temporary folder;
    the dict its ``RESULT`` line holds, or ``{"error": <its last line of stderr>}``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"error": lines[-1][-200:] if lines else f"exit status {done.returncode}"}


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` rotated left by ``shift``: each repetition runs the rows in another order, so that the machine's
    load hits every row alike."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])
