"""benchmarks/bench_order_ab.py runs end to end (this tree against itself) and prints its table (no timing is
asserted)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_order_ab_prints_a_row_per_workload() -> None:
    command = [sys.executable, "benchmarks/bench_order_ab.py", "--base", str(REPO / "src"), "--rounds", "1"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| Order(1e9)[k] |", "| Order(1e9).take(1024) |", "| OrderFamily 1 x 1000, 1024 epochs |"):
        assert row in proc.stdout
    assert "new / base" in proc.stdout and "load average (1, 5, 15 min)" in proc.stdout
