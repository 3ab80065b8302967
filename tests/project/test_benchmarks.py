"""The benchmark suite runs end to end on tiny inputs and prints the tables it promises.

No timing is asserted here: the performance targets live only in the benchmark's own output.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import run

REPO = Path(__file__).resolve().parents[2]


def table_after(markdown: str, heading: str) -> list:
    """The rows (lists of cells, name first) of the first Markdown table after ``heading``."""
    rest = markdown.split(heading, 1)[1]
    lines = [line for line in rest.splitlines() if line.startswith("|")]
    rows, started = [], False
    for line in rest.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif started:
            break
    assert lines, f"no table after {heading!r}"
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)  # bounds a hang only: a loaded machine
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_text_table_rows_and_columns(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "## Text: the seed's first table")
    header = rows[0]
    assert header[1] == "Initial load (s)"
    assert re.fullmatch(r"Time for \d+ iterations \(s\)", header[2])
    assert any("RSS" in h for h in header) and header[-1] == "Disk usage (MB)"
    assert [r[0] for r in rows[2:]] == run.TEXT_ROWS
    for row in rows[2:]:
        if "0.9.0" not in row[0]:  # the upstream venv may be absent in --quick mode
            assert "error" not in row and "skipped" not in row, row


def test_text_rows_read_the_same_characters(quick_run):
    out, _ = quick_run
    results = json.loads((out / "results.json").read_text())
    chars = results["text"]["chars_per_pass"]
    assert len(chars) >= 4 and len(set(chars.values())) == 1


def test_image_table_rows_and_columns(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "## Images: the seed's second table")
    assert rows[0][1:] == run.IMAGE_COLUMNS
    assert [r[0] for r in rows[2:]] == run.IMAGE_ROWS
    assert "never read pixels" in stdout


def test_micro_benchmarks_and_targets(quick_run):
    _out, stdout = quick_run
    for heading in ("### Random access", "### One read of 256 random", "### Growing a map",
                    "### Build throughput", "### `len(pickle.dumps(m))`"):
        assert heading in stdout
    targets = table_after(stdout, "## Targets (measured in this run)")
    assert targets[0][1:] == ["target", "measured", "pass?"]
    names = " ".join(r[0] for r in targets[2:])
    for expected in ("bytes.decode", "open at", "last extend", "build throughput", "warm full image pass",
                     "pickle"):
        assert expected in names
    assert all(r[3] in ("PASS", "FAIL", "n/a") for r in targets[2:])


def numeric(cell: str) -> bool:
    return re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)?(e-?[0-9]+)?", cell) is not None


def test_iteration_vs_pyarrow_table(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "### Per-item iteration")
    assert rows[0][1:] == ["items", "mmap_ninja `for x in m`", "pyarrow, batch by batch", "ours / pyarrow",
                           "CPU time: ours / pyarrow", "same items read"]
    assert [r[0] for r in rows[2:]] == ["tokens", "images", "strings"]
    for row in rows[2:]:
        assert all(numeric(c) for c in row[1:6]), row
        assert row[6] == "yes", row  # both sides read the same number of items and elements


def test_build_vs_raw_writer_table(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "### Build from samples in RAM vs a raw writer")
    assert rows[0][-3:] == ["raw writer", "mmap_ninja `from_lists` / `from_strings`", "ours / raw"]
    assert [r[0].split()[0] for r in rows[2:]] == ["int32", "strings", "images"]
    for row in rows[2:]:
        assert all(numeric(c) for c in row[1:]), row


def test_token_floor_table(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "### Random `m[i]` on token sequences vs the floor")
    assert rows[0][1:] == ["items", "mmap_ninja `m[i]`", "floor", "ours / floor"]
    assert all(numeric(c) for c in rows[2][1:]), rows[2]
    assert "0 of the first 1,000 reads differed" in stdout


def test_append_per_call_table(quick_run):
    _, stdout = quick_run
    rows = table_after(stdout, "single `m.append(x)` calls")
    assert [r[0].split()[0] for r in rows[2:]] == ["StringsMmap", "RaggedMmap"]
    for row in rows[2:]:
        assert numeric(row[1]), row
        # Until the core has transaction(), the row says so instead of a figure, and its target fails.
        assert numeric(row[2]) or row[2] == "MISSING: no transaction()", row


def test_peer_targets(quick_run):
    out, stdout = quick_run
    targets = {r[0]: r[1:] for r in table_after(stdout, "## Targets (measured in this run)")[2:]}
    for kind in ("tokens", "images", "strings"):
        assert targets[f"per-item iteration, {kind}, vs pyarrow (ours / pyarrow)"][0] == "<= 1.0x"
        goal, _measured, passed = targets[f"build, {kind}, vs raw writer (ours / raw throughput)"]
        # issue 10's target is the token build; strings and images are reported the same way
        assert (goal, passed in ("PASS", "FAIL")) == ((">= 0.8x", True) if kind == "tokens" else ("reported", False))
    assert targets["token-sequence random read vs the floor (ours / floor)"][0] == "<= 2x"
    for kind in ("strings", "ragged"):
        _goal, measured, passed = targets[f"{kind} append inside a transaction cheaper than bare (bare / transaction)"]
        assert passed in ("PASS", "FAIL")
        if "MISSING" in measured:
            assert passed == "FAIL"
    peer_results = json.loads((out / "results.json").read_text())["peers"]
    assert set(peer_results) == {"iteration", "build_vs_raw", "token_floor", "append"}


def test_only_runs_one_section(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-upstream", "--out", str(tmp_path),
                           "--only", "token_floor"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### Random `m[i]` on token sequences vs the floor" in proc.stdout
    for other in ("## Text:", "## Images:", "## Micro-benchmarks", "### Per-item iteration", "append(x)"):
        assert other not in proc.stdout
    names = [r[0] for r in table_after(proc.stdout, "## Targets (measured in this run)")[2:]]
    assert names == ["token-sequence random read vs the floor (ours / floor)"]


def test_raw_writer_writes_the_samples_and_offsets(tmp_path):
    from benchmarks import _peers

    tokens = _peers.token_sequences(2_500, seed=5)
    nbytes = _peers.raw_writer(tmp_path, "tokens", tokens, batch_size=1_000)
    assert nbytes == sum(a.nbytes for a in tokens)
    assert np.array_equal(np.fromfile(tmp_path / "data.bin", dtype=np.int32), np.concatenate(tokens))
    lengths = [len(a) for a in tokens]
    assert np.fromfile(tmp_path / "offsets.bin", dtype=np.int64).tolist() == [0, *np.cumsum(lengths).tolist()]
    texts = ["naïve", "", "日本語", "abc"]
    (tmp_path / "s").mkdir()
    assert _peers.raw_writer(tmp_path / "s", "strings", texts, batch_size=3) == len("".join(texts).encode())
    assert (tmp_path / "s" / "data.bin").read_bytes().decode() == "".join(texts)
    images = [np.full((2, 3, 3), k, dtype=np.uint8) for k in range(3)] + [np.zeros((4, 1, 3), np.uint8)]
    (tmp_path / "i").mkdir()
    _peers.raw_writer(tmp_path / "i", "images", images, batch_size=2)
    assert np.fromfile(tmp_path / "i" / "shapes.bin", dtype=np.int64).reshape(-1, 3).tolist() == [
        [2, 3, 3], [2, 3, 3], [2, 3, 3], [4, 1, 3]]
    assert np.fromfile(tmp_path / "i" / "offsets.bin", dtype=np.int64).tolist() == [0, 18, 36, 54, 66]


def test_outputs_written_and_name_their_command(quick_run):
    out, _ = quick_run
    for name in ("results.md", "results.json", "extend_growth.png", "tables.png", "peers.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "Command: `python -m benchmarks --quick" in md
    assert "Machine:" in md and "numpy" in md
    assert not (out / "work").exists()  # scratch maps removed


def test_markdown_table_format():
    table = run.markdown_table(["a", "b"], [("x", [1.5, None]), ("y", [12345, "skipped"])])
    assert table.splitlines() == ["|  | a | b |", "|:--|--:|--:|", "| x | 1.5 | n/a |", "| y | 12,345 | skipped |"]
