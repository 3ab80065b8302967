"""Running one benchmark row in a fresh process: the epoch harnesses (bench_epochs.py, bench_lm_batches.py) start
each row as ``python SCRIPT --child ...``, which prints one ``RESULT {json}`` line; a row that fails or hangs comes
back as ``{"error": ...}`` so that the table still prints."""

from __future__ import annotations

import json
import os
import statistics
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


def medians(results: dict[Any, list[dict[str, Any]]], unit: str
            ) -> tuple[dict[Any, float], dict[Any, float], dict[Any, str]]:
    """Per row key: the median of ``unit`` per second and of ``unit`` per CPU second over its runs, or (when any
    run failed) the first failed run's error."""
    speed: dict[Any, float] = {}
    per_cpu: dict[Any, float] = {}
    errors: dict[Any, str] = {}
    for key, runs in results.items():
        good = [run[unit] / run["seconds"] for run in runs if "error" not in run]
        if good and len(good) == len(runs):
            speed[key] = statistics.median(good)
            per_cpu[key] = statistics.median(run[unit] / run["cpu"] for run in runs)
        else:
            errors[key] = next(run["error"] for run in runs if "error" in run)
    return speed, per_cpu, errors
