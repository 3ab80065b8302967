"""A missing optional dependency is named with the extra that installs it, not a bare ModuleNotFoundError."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Hide one package from a fresh interpreter, as an installation without that extra would be.
_HIDE = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""


@pytest.mark.parametrize(("hidden", "statement", "extra"), [
    ("torch", "import mmap_ninja.adapters.torch", "torch"),
    ("torch", "import mmap_ninja.adapters.shards", "torch"),
    ("pyarrow", "import mmap_ninja.adapters.arrow", "arrow"),
    ("pyarrow", "import mmap_ninja.adapters.ingest", "arrow"),
    ("dask", "import mmap_ninja.adapters.dask", "dask"),
    ("pyarrow", "import mmap_ninja; mmap_ninja.StringsMmap.from_strings('t', ['a']).to_arrow()", "arrow"),
])
def test_a_missing_extra_is_named(hidden: str, statement: str, extra: str, tmp_path: object) -> None:
    code = _HIDE.format(hidden=hidden) + statement
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:"), done.stderr[-2000:]
    assert f"pip install 'mmap_ninja[{extra}]'" in last and repr(hidden) in last, last


def test_importing_mmap_ninja_needs_no_extra(tmp_path: object) -> None:
    code = "".join(_HIDE.format(hidden=name) for name in ("torch", "pyarrow", "dask", "fsspec", "PIL")) + \
        "import mmap_ninja; m = mmap_ninja.StringsMmap.from_strings('t', ['a']); print(m[0])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "a"
