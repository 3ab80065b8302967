"""benchmarks/bench_order.py runs end to end on tiny sizes and prints its two tables (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_order_quick(tmp_path: Path) -> None:
    plot = tmp_path / "ratios.png"
    proc = subprocess.run([sys.executable, "benchmarks/bench_order.py", "--quick", "--plot", str(plot)], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ResumableSampler, n = 1e5 |" in proc.stdout and "| DistributedSampler, n = 1e5 |" in proc.stdout
    assert "realized ratios over the first 1e4 positions" in proc.stdout
    assert "| m[i], random i | " in proc.stdout.split("reads beside the sources' own")[1]  # the read-cost table
    assert "Added by the blend (µs)" in proc.stdout and "load average (1, 5, 15 min)" in proc.stdout
    assert "error" not in proc.stdout.split("## blend")[0].replace("Time to first", "")
    assert plot.stat().st_size > 10_000
