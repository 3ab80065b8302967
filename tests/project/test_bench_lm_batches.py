"""benchmarks/bench_lm_batches.py runs end to end on a tiny corpus, our row and the raw floor's (no timing is
asserted; the peers' rows need the peers' virtualenv)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


def test_bench_lm_batches_tiny(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    command = [sys.executable, "benchmarks/bench_lm_batches.py", "--sequences", "300", "--max-length", "40",
               "--batch-sizes", "16", "--workers", "0", "--repeats", "1", "--work", str(tmp_path), "--out", str(out),
               "--rows", "mmap_ninja RaggedMmap + PadCollate", "raw memmap + int64 offsets (floor)"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "| 16 | 0 | mmap_ninja RaggedMmap + PadCollate | " in text and "cannot run" not in text
    assert "| 16 | 0 | raw memmap + int64 offsets (floor) | " in text
    assert "Load average (1, 5, 15 min)" in text
