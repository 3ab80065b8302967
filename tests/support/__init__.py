"""Helpers the tests share, imported as ``tests.support`` from a test module in any folder (never ``conftest``:
fixtures live in ``tests/conftest.py`` and the plugins it names, plain functions here).

Helpers a user of the test kit would want too are in `mmap_ninja.testing` (`KindSpec.build`, `arrays_equal`,
`directory_digest`); these are the tests' own: byte snapshots of a folder, a header written by hand, a peak of
memory measured in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mmap_ninja.kinds.maps import MapBase
from mmap_ninja.storage.format import header_checksum
from mmap_ninja.testing import arrays_equal, spec_for

__all__ = ["build", "equal", "peak_bytes_in_a_fresh_process", "sample_for", "snapshot", "write_header"]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes below ``directory`` (to check that a failed call left the disk as it was)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def write_header(directory: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as the map's header, with its checksum made anew (as a writer of that content would)."""
    content = {key: value for key, value in content.items() if key != "checksum"}
    content["checksum"] = header_checksum(content)
    (Path(directory) / "header.json").write_text(json.dumps(content))


def peak_bytes_in_a_fresh_process(setup: str, statement: str) -> int:
    """tracemalloc's peak while ``statement`` runs, in a fresh interpreter, after ``setup`` and one warm-up run of
    the statement (imports, caches). tracemalloc counts every thread's allocations: in the test process, the
    threads other tests leave running (the session's Dask client, decoding pools) would be counted too."""
    code = f"import tracemalloc\n{setup}\n{statement}\ntracemalloc.start()\n{statement}\n" \
           f"print(tracemalloc.get_traced_memory()[1])\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def sample_for(kind: str, i: int) -> Any:
    """A deterministic sample of each kind, derivable from its index (the test kit's spec of the kind)."""
    return spec_for(kind).make_sample(i)


def build(kind: str, path: Path, n: int) -> MapBase:
    """A map of ``kind`` holding samples 0 .. n-1, built as the kit's spec says."""
    return spec_for(kind).build(path, n)


def equal(a: Any, b: Any) -> bool:
    return arrays_equal(a, b)
