"""Maps written by the real mmap_ninja 0.9.0 (from PyPI, in its own virtualenv), and what 0.9.0 reads back.

The virtualenv is made once, in ``tests/.venv-090`` (or ``$MMAP_NINJA_090_VENV``), and reused by later runs.
`legacy_maps` builds the small maps once per test session; `read_with_090` runs 0.9.0's own reader on a map
and returns its samples, so tests compare our readers with 0.9.0 itself.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REQUIREMENTS = ["mmap-ninja==0.9.0", "zstandard"]
# tests/.venv-090, beside this folder (where it was made before the helpers moved into tests/support/)
VENV = Path(os.environ.get("MMAP_NINJA_090_VENV", Path(__file__).resolve().parents[1] / ".venv-090"))


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONHASHSEED"] = "0"
    return env


def _python_ok(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import mmap_ninja, zstandard; print(mmap_ninja.__version__)"],
                           capture_output=True, text=True, env=_clean_env())
    return probe.returncode == 0 and probe.stdout.strip() == "0.9.0"


def python_090() -> str:
    """The interpreter of the virtualenv holding mmap_ninja 0.9.0 and zstandard (created on first use)."""
    python = VENV / "bin" / "python"
    if _python_ok(python):
        return str(python)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it
        if not _python_ok(python):
            shutil.rmtree(VENV, ignore_errors=True)
            for command in ([sys.executable, "-m", "venv", str(VENV)],
                            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             *REQUIREMENTS]):
                done = subprocess.run(command, capture_output=True, text=True, env=_clean_env())
                if done.returncode != 0:
                    raise RuntimeError(f"making the mmap_ninja 0.9.0 virtualenv failed: {' '.join(command)}\n"
                                       f"{done.stderr[-2000:]}")
            if not _python_ok(python):
                raise RuntimeError(f"{python} does not import mmap_ninja 0.9.0 and zstandard")
    return str(python)


def run_090(code: str, cwd: Path) -> str:
    """Run a Python snippet with mmap_ninja 0.9.0 in ``cwd``; its stdout. Fails the test with 0.9.0's error."""
    done = subprocess.run([python_090(), "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(cwd), env=_clean_env())
    if done.returncode != 0:
        raise AssertionError(f"the mmap_ninja 0.9.0 snippet failed:\n{done.stderr[-3000:]}")
    return done.stdout


_READ_SNIPPET = """
import pickle, sys
import numpy as np
from mmap_ninja import generic

def read(path):
    out = []
    m = generic.open_existing(path)
    for i in range(len(m)):
        try:
            sample = m[i]
        except Exception as e:
            out.append(("error", type(e).__name__))
            continue
        if isinstance(sample, np.ndarray):
            sample = ("array", np.array(sample))
        else:
            sample = ("value", sample)
        out.append(sample)
    return type(m).__name__, out

sys.stdout.buffer.write(pickle.dumps({path: read(path) for path in sys.argv[1:]}))
"""

Read090 = tuple[str, list[tuple[str, Any]]]


def read_many_with_090(paths: list[Path]) -> dict[Path, Read090]:
    """What 0.9.0's ``generic.open_existing(path)`` reads in each map, in one 0.9.0 process: its type name and
    its samples, each ``("array", ndarray)``, ``("value", python object)`` or ``("error", exception name)``."""
    done = subprocess.run([python_090(), "-c", _READ_SNIPPET, *map(str, paths)], capture_output=True,
                          env=_clean_env())
    if done.returncode != 0:
        raise AssertionError(f"mmap_ninja 0.9.0 could not read {paths}:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Read090] = pickle.loads(done.stdout)
    return {Path(path): read for path, read in result.items()}


def read_with_090(path: Path) -> Read090:
    """``(type name, samples)`` as 0.9.0 reads the map in ``path`` (see `read_many_with_090`)."""
    return read_many_with_090([path])[Path(path)]


# Every map the tests read, written by 0.9.0 through its public API (extend included), then damaged the way an
# interrupted 0.9.0 write leaves them ("crash_*": the files are cut back with plain file operations).
_BUILD_SNIPPET = r"""
import os, struct
import numpy as np
from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja import numpy as np_ninja

def cut_np_dir(directory, rows):
    # Leave an index np-dir with `rows` entries, as if the 0.9.0 extend that followed never happened.
    with open(os.path.join(directory, "shape.ninja"), "rb") as f:
        raw = f.read()
    shape = struct.unpack(f"<{len(raw) // 8}Q", raw)
    row_bytes = np.dtype(open(os.path.join(directory, "dtype.ninja")).read()).itemsize
    for n in shape[1:]:
        row_bytes *= n
    os.truncate(os.path.join(directory, "data.ninja"), rows * row_bytes)
    with open(os.path.join(directory, "shape.ninja"), "wb") as f:
        f.write(struct.pack(f"<{len(shape)}Q", rows, *shape[1:]))

texts = ["", "hello", "naïve café", "日本語のテキスト", "a" * 300, "emoji 🥷 ninja", "tab\tand\nnewline"]
m = StringsMmap.from_strings("strings", texts)
m.extend(["after extend", ""])
m.append("appended")

long_texts = [f"record {i}: the quick brown fox {i * 7 % 13} jumps over the lazy dog " * (1 + i % 3)
              for i in range(300)] + texts
m = StringsMmap.from_strings("strings_zstd", long_texts, zstd_level=5)
m.extend(["zstd extend", "ü" * 50])
m = StringsMmap.from_strings("strings_zstd_dict", long_texts, zstd_level=3, zstd_train_dictionary_size=2048)
m.extend(["zstd dict extend"])
assert os.path.exists("strings_zstd_dict/zstd_dict.ninja")
# 0.9.0 leaves zstd_level.ninja behind when it re-creates a compressed map without compression.
StringsMmap.from_strings("strings_stale_zstd", texts, zstd_level=3)
StringsMmap.from_strings("strings_stale_zstd", texts)
assert os.path.exists("strings_stale_zstd/zstd_level.ninja")

flat = [np.arange(5, dtype=np.int32), np.array(7, dtype=np.int32), np.arange(0, dtype=np.int32),
        np.arange(1, dtype=np.int32), np.array([-3, 4], dtype=np.int32)]
m = RaggedMmap.from_lists("ragged_flat", flat)
m.extend([np.arange(3, dtype=np.int32) * 10, np.array(-1, dtype=np.int32)])

nd = [np.arange(6.0).reshape(2, 3), np.arange(4.0), np.zeros((0, 2)), np.array(5.0),
      np.arange(8.0).reshape(2, 2, 2), np.ones((1, 1))]
m = RaggedMmap.from_lists("ragged_nd", nd)
m.extend([np.arange(3.0), np.full((3, 1), 2.5)])
RaggedMmap.from_lists("ragged_float16", [np.array([1.5, 2.5], dtype=np.float16), np.array([-0.0], np.float16)])

base = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
np_ninja.from_ndarray("numpy_c", base)
np_ninja.extend_dir("numpy_c", base[:2] + 100)
np_ninja.from_ndarray("numpy_f", np.asfortranarray(base))
np_ninja.from_ndarray("numpy_f_extended", np.asfortranarray(base))
np_ninja.extend_dir("numpy_f_extended", base[:1] + 100)
np_ninja.from_ndarray("numpy_int16", np.array([1, -2, 30000], dtype=np.int16))
np_ninja.from_ndarray("numpy_datetime", np.array(["2024-01-01", "1999-12-31"], dtype="datetime64[D]"))

# Crash leftovers. An interrupted StringsMmap.extend can extend `starts` and not `ends`...
m = StringsMmap.from_strings("crash_strings_ends", texts)
m.extend(["lost 1", "lost 2"])
cut_np_dir("crash_strings_ends/ends", len(texts))
# ...or extend both and not write the data (0.9.0 writes data.ninja last).
m = StringsMmap.from_strings("crash_strings_data", texts)
m.extend(["lost 1", "lost 2"])
os.truncate("crash_strings_data/data.ninja", os.path.getsize("crash_strings_data/data.ninja") - len("lost 2") - 2)
# An interrupted RaggedMmap.extend writes data, starts, ends, flattened_shapes and shapes in that order.
m = RaggedMmap.from_lists("crash_ragged_flat", flat)
m.extend([np.arange(3, dtype=np.int32), np.arange(2, dtype=np.int32)])
cut_np_dir("crash_ragged_flat/shapes", len(flat))
m = RaggedMmap.from_lists("crash_ragged_nd", nd)
m.extend([np.arange(3.0), np.ones((2, 2))])
cut_np_dir("crash_ragged_nd/ends", len(nd) + 1)
# The nested map of shapes is extended last, the same way: its own `shapes` can be the short one.
m = RaggedMmap.from_lists("crash_ragged_nd_nested", nd)
m.extend([np.arange(3.0), np.ones((2, 2))])
cut_np_dir("crash_ragged_nd_nested/shapes/shapes", len(nd))
# extend_dir appends the data, then rewrites shape.ninja: put back the old shape.
np_ninja.from_ndarray("crash_numpy", base)
old_shape = open("crash_numpy/shape.ninja", "rb").read()
np_ninja.extend_dir("crash_numpy", base[:1])
open("crash_numpy/shape.ninja", "wb").write(old_shape)
print("ok")
"""

MAP_NAMES = ["strings", "strings_zstd", "strings_zstd_dict", "strings_stale_zstd", "ragged_flat", "ragged_nd",
             "ragged_float16", "numpy_c", "numpy_f", "numpy_f_extended", "numpy_int16", "numpy_datetime",
             "crash_strings_ends", "crash_strings_data", "crash_ragged_flat", "crash_ragged_nd",
             "crash_ragged_nd_nested", "crash_numpy"]


def copy_map(source: Path, destination: Path) -> Path:
    """A private copy of a session map, for a test that changes it."""
    shutil.copytree(source, destination)
    return destination


@pytest.fixture(scope="session")
def legacy_maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Name -> directory of every map in `MAP_NAMES`, written by mmap_ninja 0.9.0 (do not modify them)."""
    root = tmp_path_factory.mktemp("maps_090")
    assert run_090(_BUILD_SNIPPET, root).strip().endswith("ok")
    return {name: root / name for name in MAP_NAMES}


@pytest.fixture(scope="session")
def legacy_reads(legacy_maps: dict[str, Path]) -> dict[str, Read090]:
    """Name -> what 0.9.0 reads in that map of `legacy_maps` (read once per session, before any test ran)."""
    reads = read_many_with_090(list(legacy_maps.values()))
    return {name: reads[path] for name, path in legacy_maps.items()}


@pytest.fixture(scope="session")
def big_legacy_maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Maps of 1,000,000 small samples written by 0.9.0 (strings, flat ragged, N-d ragged, numpy)."""
    root = tmp_path_factory.mktemp("big_maps_090")
    run_090("""
        import numpy as np
        from mmap_ninja import RaggedMmap, StringsMmap
        from mmap_ninja import numpy as np_ninja
        n = 1_000_000
        StringsMmap.from_strings("strings", [str(i) for i in range(n)])
        RaggedMmap.from_lists("ragged_flat", [np.arange(i % 3, dtype=np.uint8) for i in range(n)])
        RaggedMmap.from_lists("ragged_nd", [np.zeros((1, i % 2 + 1), dtype=np.uint8) for i in range(n)])
        np_ninja.from_ndarray("numpy", np.zeros((n, 2), dtype=np.uint8))
    """, root)
    return {name: root / name for name in ("strings", "ragged_flat", "ragged_nd", "numpy")}
