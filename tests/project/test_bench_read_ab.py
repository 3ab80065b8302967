"""benchmarks/bench_read_ab.py runs end to end on tiny maps and prints its table (no timing is asserted)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_read_ab.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_table_has_a_row_per_kind_and_workload_with_a_verdict():
    src = str(REPO / "src")
    done = run("--base", src, "--src", src, "--quick", "--no-callgrind", "--kinds", "ragged,sharded")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"^\| (\w+ \w+) \| [\d.,]+ \| [\d.,]+ \| [\d.]+ \| (PASS|FAIL) \|$", done.stdout, re.M)
    assert [name for name, _ in rows] == ["ragged random", "ragged batch", "ragged pass",
                                          "sharded random", "sharded batch", "sharded pass"], done.stdout
    assert "instructions: not measured" in done.stdout
    assert re.search(r"^verdict \(wall time\): ", done.stdout, re.M)


def test_unknown_kind_is_refused_before_anything_is_built():
    done = run("--base", str(REPO / "src"), "--kinds", "ragged,audio")
    assert done.returncode == 2 and "unknown kinds ['audio']" in done.stderr
