"""benchmarks/bench_iteration_cpu.py runs on tiny maps and prints a row per kind (no timing is asserted)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_iteration_cpu.py"


def test_a_row_per_kind_found_and_a_note_for_a_kind_missing(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.ipc

    sequences = [np.arange(n, dtype=np.int32) for n in (3, 0, 5, 1)]
    RaggedMmap.from_lists(tmp_path / "tokens_ours", sequences).close()
    offsets = pa.array(np.cumsum([0, *map(len, sequences)]).astype(np.int64))
    table = pa.table({"tokens": pa.LargeListArray.from_arrays(offsets, pa.array(np.concatenate(sequences)))})
    with pyarrow.ipc.new_file(str(tmp_path / "peer_tokens.arrow"), table.schema) as writer:
        writer.write_table(table)
    StringsMmap.from_strings(tmp_path / "short_utf8_32", ["añ", "", "日本", "x😀"]).close()
    done = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path), "--passes", "2",
                           "--kinds", "tokens,short_utf8,strings"], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"^\| (\w+) \| ([\d,]+) \|(?: [\d.e-]+ \|){6}$", done.stdout, re.M)
    assert rows == [("tokens", "4"), ("short_utf8", "4")], done.stdout
    assert f"| strings | not in {tmp_path} |" in done.stdout
    assert (tmp_path / "short_utf8_32.arrow").exists()  # written from the map
