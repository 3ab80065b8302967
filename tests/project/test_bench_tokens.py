"""benchmarks/bench_tokens.py runs end to end on tiny inputs and prints its tables (no timing is asserted)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_tokens_prints_its_tables(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    for k, source in enumerate(sorted(Path(json.__file__).parent.glob("*.py"))[:5]):
        (text / f"{k}.txt").write_bytes(source.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_tokens.py"), "--data", str(tmp_path),
                           "--synthetic-docs", "3000", "--seq-len", "256", "--reads", "200"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for heading in ("### real text, byte-level", "one shuffled epoch of 2,049-token blocks", "### synthetic",
                    "### Targets"):
        assert heading in out, out
    assert "| mmap_ninja RaggedMmap + PackedTokens (" in out and "| Megatron-style IndexedDataset" in out
    assert re.search(r"batch of 64 with boundaries / np.copyto one by one: [\d.]+x", out)
    # Without --peers-python the peers' rows are there and say why they did not run.
    assert out.count("LitData optimize + TokensLoader (tokens only, windows within a chunk): not run (pass "
                     "--peers-python") == 2
    for peer in ("LitData StreamingDataset + TokensLoader", "MosaicML streaming StreamingDataset"):
        rows = re.findall(rf"\| {re.escape(peer)}[^|]*, [02] workers: not run \(pass --peers-python", out)
        assert len(rows) == 2, peer
    assert re.search(r"\| TokenBudgetBatchSampler, max_tokens=[\d,]+ \| [\d.]+", out)
    assert len(re.findall(r"\| (PASS|FAIL) \|", out)) == 8
