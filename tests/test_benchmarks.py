"""The benchmark suite runs end to end on tiny inputs and prints the tables it promises.

No timing is asserted here: the performance targets live only in the benchmark's own output.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from benchmarks import run  # noqa: E402


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
                          capture_output=True, text=True, timeout=300)
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
    out, stdout = quick_run
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


def test_outputs_written_and_name_their_command(quick_run):
    out, _ = quick_run
    for name in ("results.md", "results.json", "extend_growth.png", "tables.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "Command: `python -m benchmarks --quick" in md
    assert "Machine:" in md and "numpy" in md
    assert not (out / "work").exists()  # scratch maps removed


def test_markdown_table_format():
    table = run.markdown_table(["a", "b"], [("x", [1.5, None]), ("y", [12345, "skipped"])])
    assert table.splitlines() == ["|  | a | b |", "|:--|--:|--:|", "| x | 1.5 | n/a |", "| y | 12,345 | skipped |"]
