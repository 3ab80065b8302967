"""Bad input: every refusal raises a specific exception with a clear message and leaves the disk untouched.

Each case builds a map, optionally damages it, snapshots every file's bytes, runs one bad call, checks the
exception type and a fragment of its message, and checks that every file is byte for byte as before.
"""

import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import (
    CorruptMapError,
    FormatVersionError,
    NotAMapError,
    NumpyMmap,
    RaggedMmap,
    StringsMmap,
    np_from_ndarray,
    open_existing,
)

from tests.support import write_header


def snapshot(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): (p.is_dir(), None if p.is_dir() else p.read_bytes())
            for p in sorted(Path(directory).rglob("*"))}


def build(spec: str, path: Path):
    if spec == "strings":
        return StringsMmap.from_strings(path, ["a", "bb", "\u00e9t\u00e9"])
    if spec == "ragged_empty":
        return RaggedMmap.from_lists(path, [])
    kind, dtype = spec.split("_")
    dtype = {"u8": np.uint8, "i64": np.int64, "f64": np.float64, "i32": np.int32, "f32": np.float32}[dtype]
    if kind == "ragged":
        return RaggedMmap.from_lists(path, [np.array([1, 2], dtype), np.array([[3]], dtype), np.array(4, dtype)])
    return np_from_ndarray(path, np.arange(18).reshape(3, 2, 3).astype(dtype))


def writer(cls):
    return lambda p: cls(p, mode="r+")


def _extend(cls, items):
    def act(p):
        with cls(p, mode="r+") as m:
            m.extend(items)
    return act


def _append(cls, item):
    def act(p):
        with cls(p, mode="r+") as m:
            m.append(item)
    return act


def _setitem(cls, index, value, mode="r+"):
    def act(p):
        with cls(p, mode=mode) as m:
            m[index] = value
    return act


def _open(cls=None, **kw):
    def act(p):
        (open_existing(p) if cls is None else cls(p, **kw)).close()
    return act


def _edit_header(fn):
    def damage(p):
        header = json.loads((p / "header.json").read_text())
        fn(header)
        write_header(p, header)
    return damage


def _truncate(name, by):
    def damage(p):
        f = p / name
        os.truncate(f, f.stat().st_size - by)
    return damage


def _write(name, data):
    def damage(p):
        (p / name).write_bytes(data)
    return damage


def _dir_for(name):
    def damage(p):
        (p / name).unlink()
        (p / name).mkdir()
    return damage


def _raising_read(p):
    def boom(sample):
        raise KeyError("wrapper exploded")
    with StringsMmap(p, wrapper_fn=boom) as m:
        m[0]


def _obj():
    a = np.empty(2, dtype=object)
    a[:] = [1, "x"]
    return a


# (id, map to build, damage or None, bad call, exception, message fragment)
CASES = [
    # unsafe casts on extend
    ("ragged-300-into-uint8", "ragged_u8", None, _extend(RaggedMmap, [[1, 300]]), ValueError, "value 300 does not fit"),
    ("ragged-1.5-into-int", "ragged_i64", None, _extend(RaggedMmap, [[1.5]]), ValueError, "value 1.5 does not fit"),
    ("ragged-nan-into-int", "ragged_i64", None, _extend(RaggedMmap, [[np.nan]]), ValueError, "does not fit"),
    ("ragged-complex-into-float", "ragged_f64", None, _extend(RaggedMmap, [[1 + 2j]]), TypeError,
     "cannot store dtype complex128 as float64"),
    ("ragged-overflow-into-float32", "numpy_f32", None, _extend(NumpyMmap, np.full((1, 2, 3), 1e300)),
     ValueError, "overflows float32"),
    ("ragged-str-into-int", "ragged_i64", None, _extend(RaggedMmap, [np.array(["7"])]), TypeError,
     "cannot store dtype <U1 as int64"),
    ("ragged-bad-sample-late-in-batch", "ragged_u8", None, _extend(RaggedMmap, [[1], [2], [-1]]), ValueError,
     "item 5"),
    ("numpy-300-into-uint8", "numpy_u8", None, _extend(NumpyMmap, np.full((1, 2, 3), 300)), ValueError,
     "value 300 does not fit"),
    ("numpy-1.5-into-int", "numpy_i32", None, _extend(NumpyMmap, np.full((2, 2, 3), 1.5)), ValueError,
     "value 1.5 does not fit"),
    ("numpy-complex-into-float", "numpy_f32", None, _extend(NumpyMmap, np.full((1, 2, 3), 1j)), TypeError,
     "cannot store dtype complex128 as float32"),
    ("np_extend-300-into-uint8-by-path", "numpy_u8", None,
     lambda p: mmap_ninja.np_extend(p, np.full((1, 2, 3), 300)), ValueError, "does not fit"),
    # object dtype
    ("ragged-object-dtype", "ragged_i64", None, _extend(RaggedMmap, [_obj()]), TypeError, "dtype object"),
    ("ragged-unequal-nested-lists", "ragged_i64", None, _extend(RaggedMmap, [[[1], [2, 3]]]), ValueError,
     "not a regular array"),
    ("numpy-object-dtype", "numpy_i32", None, _extend(NumpyMmap, np.empty((1, 2, 3), dtype=object)), TypeError,
     "dtype object"),
    ("empty-ragged-object-dtype", "ragged_empty", None, _extend(RaggedMmap, [_obj()]), TypeError, "dtype object"),
    # shape / ndim in the NumPy module
    ("numpy-wrong-sample-shape", "numpy_i32", None, _extend(NumpyMmap, np.zeros((2, 3, 2), np.int32)),
     ValueError, "the map's samples have shape (2, 3)"),
    ("numpy-wrong-ndim", "numpy_i32", None, _extend(NumpyMmap, np.zeros((2, 6), np.int32)), ValueError,
     "samples of shape (6,)"),
    ("numpy-list-with-one-bad-shape", "numpy_i32", None,
     _extend(NumpyMmap, [np.zeros((2, 3)), np.zeros((3, 2))]), ValueError, "item 4 has shape (3, 2)"),
    ("numpy-extend-scalar", "numpy_i32", None, _extend(NumpyMmap, np.int32(5)), ValueError, "a scalar"),
    ("numpy-append-wrong-shape", "numpy_i32", None, _append(NumpyMmap, np.zeros(6, np.int32)), ValueError,
     "shape"),
    ("numpy-append-none", "numpy_i32", None, _append(NumpyMmap, None), TypeError, "is None"),
    # strings
    ("strings-int-item", "strings", None, _extend(StringsMmap, ["ok", 5]), TypeError, "item 4 is int, expected str"),
    ("strings-bytes-item", "strings", None, _extend(StringsMmap, [b"raw"]), TypeError, "is bytes, expected str"),
    ("strings-none-item", "strings", None, _append(StringsMmap, None), TypeError, "is NoneType, expected str"),
    ("strings-lone-surrogate", "strings", None, _extend(StringsMmap, ["fine", "bad \ud800"]), ValueError,
     "item 4 cannot be stored as UTF-8"),
    ("strings-extend-one-str", "strings", None, _extend(StringsMmap, "abc"), TypeError, "use append()"),
    ("ragged-none-sample", "ragged_i64", None, _extend(RaggedMmap, [[1], None]), TypeError, "item 4 is None"),
    # wrapper_fn raising: the read error propagates, the map is unchanged
    ("wrapper-fn-raises", "strings", None, _raising_read, KeyError, "wrapper exploded"),
    # batch_size (checked before anything is created)
    *[(f"batch-size-{b!r}", None, None,
       (lambda size: lambda p: StringsMmap.from_generator(p / "new", iter(["a"]), batch_size=size))(b), ValueError,
       "batch_size must be a positive integer") for b in (0, -1, True, 2.0)],
    ("mode-w", "strings", None, _open(StringsMmap, mode="w"), ValueError, "mode must be 'r'"),
    # not a map
    ("open-missing-path", None, None, lambda p: StringsMmap(p / "nope", mode="r"), NotAMapError,
     "no such map directory"),
    ("open-existing-missing-path", None, None, lambda p: open_existing(p / "nope"), NotAMapError,
     "no such map directory"),
    ("open-empty-folder", None, lambda p: (p / "empty").mkdir(), lambda p: open_existing(p / "empty"),
     NotAMapError, "header.json is missing"),
    ("open-foreign-folder", None, _write("notes.txt", b"hello"), lambda p: StringsMmap(p, mode="r"), NotAMapError,
     "holds no mmap_ninja map"),
    ("first-write-into-foreign-folder", None, _write("notes.txt", b"hello"), lambda p: StringsMmap(p).append("a"),
     FileExistsError, "holds no map"),
    ("open-a-file", None, _write("f.bin", b"x"), lambda p: RaggedMmap(p / "f.bin", mode="r"), NotAMapError,
     "is a file, not a map directory"),
    ("open-existing-a-file", None, _write("f.bin", b"x"), lambda p: open_existing(p / "f.bin"), NotAMapError,
     "is a file, not a map directory"),
    ("open-as-wrong-kind", "strings", None, _open(RaggedMmap), TypeError, "holds a 'strings' map"),
    ("create-over-foreign-folder", None, _write("notes.txt", b"hello"),
     lambda p: StringsMmap.from_strings(p, ["a"]), FileExistsError, "holds no map"),
    ("create-over-existing-map", "strings", None, lambda p: StringsMmap.from_strings(p, ["z"]), FileExistsError,
     "overwrite=True"),
    # damaged maps
    ("truncated-data", "strings", _truncate("data.bin", 1), _open(StringsMmap), CorruptMapError,
     "data.bin is truncated"),
    ("truncated-ragged-data", "ragged_i64", _truncate("data.bin", 3), _open(RaggedMmap), CorruptMapError,
     "data.bin is truncated"),
    ("truncated-numpy-data", "numpy_i32", _truncate("data.bin", 4), _open(NumpyMmap), CorruptMapError,
     "data.bin is truncated"),
    ("truncated-offsets", "strings", _truncate("offsets.bin", 5), _open(StringsMmap), CorruptMapError,
     "offsets.bin is truncated"),
    ("truncated-offsets-writer", "ragged_i64", _truncate("offsets.bin", 8), writer(RaggedMmap), CorruptMapError,
     "offsets.bin is truncated"),
    ("missing-column", "ragged_i64", lambda p: (p / "dims.bin").unlink(), _open(), CorruptMapError,
     "dims.bin is missing"),
    ("column-is-a-folder", "strings", _dir_for("data.bin"), _open(StringsMmap), CorruptMapError,
     "data.bin is not a regular file"),
    ("header-garbage", "strings", _write("header.json", b"\x00\xffnot json"), _open(), CorruptMapError,
     "header.json is not valid JSON"),
    ("header-truncated", "strings", lambda p: os.truncate(p / "header.json", 20), _open(), CorruptMapError,
     "header.json is not valid JSON"),
    ("header-empty", "numpy_i32", _write("header.json", b""), _open(), CorruptMapError,
     "header.json is not valid JSON"),
    ("header-not-ours", "strings", _write("header.json", b'{"format": "zarr"}'), _open(), CorruptMapError,
     "not a mmap_ninja header"),
    ("header-no-version", "strings", _edit_header(lambda h: h.pop("version")), _open(), CorruptMapError,
     "no valid format version"),
    ("header-newer-major", "strings", _edit_header(lambda h: h.update(version=[3, 0])), _open(),
     FormatVersionError, "format version 3.0, newer than"),
    ("header-newer-minor-writer", "strings", _edit_header(lambda h: h.update(version=[2, 1])),
     _append(StringsMmap, "x"), FormatVersionError, "format version 2.1, newer than this mmap_ninja writes"),
    ("header-newer-major-writer", "ragged_i64", _edit_header(lambda h: h.update(version=[9, 3])),
     writer(RaggedMmap), FormatVersionError, "upgrade mmap_ninja"),
    ("header-negative-length", "strings", _edit_header(lambda h: h["columns"]["data"].update(length=-1)),
     _open(), CorruptMapError, "bad length -1"),
    ("header-no-columns", "strings", _edit_header(lambda h: h.pop("columns")), _open(), CorruptMapError,
     "header.json is missing the field(s) columns"),
    ("header-is-a-folder", "strings", _dir_for("header.json"), _open(StringsMmap), CorruptMapError,
     "is a directory"),
    ("header-unknown-kind", "strings", _edit_header(lambda h: h.update(kind="graph")), _open(), ValueError,
     "map of kind 'graph', which this mmap_ninja does not know"),
    # in-place assignment
    ("strings-setitem-other-size", "strings", None, _setitem(StringsMmap, 2, "ete"), ValueError,
     "item 2 holds 5 UTF-8 bytes and the new value 3"),
    ("strings-setitem-many-one-bad", "strings", None, _setitem(StringsMmap, [0, 1], ["b", "ccc"]), ValueError,
     "item 1 holds 2 UTF-8 bytes"),
    ("strings-setitem-read-only", "strings", None, _setitem(StringsMmap, 0, "b", mode="r"), PermissionError,
     "open it with mode='r+'"),
    ("ragged-setitem-other-shape", "ragged_i64", None, _setitem(RaggedMmap, 0, [1, 2, 3]), ValueError,
     "same shape"),
    ("ragged-setitem-300-into-uint8", "ragged_u8", None, _setitem(RaggedMmap, 0, [1, 300]), ValueError,
     "does not fit"),
    ("numpy-setitem-other-shape", "numpy_i32", None, _setitem(NumpyMmap, 0, np.zeros((3, 3))), ValueError,
     "could not broadcast"),
    ("numpy-setitem-300-into-uint8", "numpy_u8", None, _setitem(NumpyMmap, 0, np.full((2, 3), 300)), ValueError,
     "does not fit"),
    ("setitem-out-of-range", "strings", None, _setitem(StringsMmap, 3, "x"), IndexError, "out of range"),
    ("extend-read-only", "ragged_i64", None, lambda p: RaggedMmap(p, mode="r").extend([[1]]), PermissionError,
     "mode='r', which never writes"),
]


@pytest.mark.parametrize("spec,damage,action,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(tmp_path, spec, damage, action, exc, fragment):
    path = tmp_path / "map"
    if spec is None:
        path.mkdir()
    else:
        build(spec, path).close()
    if damage is not None:
        damage(path)
    before = snapshot(path)
    with pytest.raises(exc) as info:
        action(path)
    assert type(info.value) is exc or issubclass(type(info.value), exc)
    assert fragment in str(info.value)
    assert snapshot(path) == before


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


def test_a_generator_that_raises_keeps_the_committed_batches(tmp_path, kind):
    def gen():
        for i in range(7):
            yield f"s{i}" if kind == "strings" else np.full((2, 3), i, np.int32)
        raise RuntimeError("the source broke")

    cls = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}[kind]
    with pytest.raises(RuntimeError, match="the source broke"):
        cls.from_generator(tmp_path / "m", gen(), batch_size=3)
    with pytest.raises(mmap_ninja.UnfinishedMapError, match="allow_unfinished=True"):
        cls(tmp_path / "m")
    with cls(tmp_path / "m", allow_unfinished=True) as m:
        assert len(m) == 6  # two batches of 3 committed; the partial seventh sample is absent
        for i in range(6):
            assert (m[i] == f"s{i}") if kind == "strings" else np.array_equal(m[i], np.full((2, 3), i))
    # the writer lock was released: the corrected build replaces the unfinished one
    with cls.from_generator(tmp_path / "m", iter([]), batch_size=3, lock_timeout=0.2) as w:
        w.extend(["x"] if kind == "strings" else [np.zeros((2, 3), np.int32)])
        assert len(w) == 1


def test_from_indexable_error_names_the_index_and_keeps_committed_batches(tmp_path):
    class Source:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            if i == 7:
                raise KeyError("no seven")
            return str(i)

    with pytest.raises(mmap_ninja.SampleFetchError, match="reading item 7 of the source raised KeyError"):
        StringsMmap.from_indexable(tmp_path / "m", Source(), batch_size=3)
    assert list(StringsMmap(tmp_path / "m", allow_unfinished=True)) == ["0", "1", "2", "3", "4", "5"]


# ----------------------------------------------------------------- a full disk and an unprivileged user

def _run_child(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("kind", ["strings", "ragged", "numpy"])
def test_a_full_disk_fails_with_efbig_and_leaves_the_map_as_it_was(tmp_path, kind):
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes writes past a size fail with EFBIG, as on a full disk."""
    path = tmp_path / "map"
    {"strings": lambda: build("strings", path), "ragged": lambda: build("ragged_i64", path),
     "numpy": lambda: build("numpy_i32", path)}[kind]().close()
    before = snapshot(path)
    result = _run_child(f"""
        import errno, resource, signal, sys
        import numpy as np
        from mmap_ninja import open_existing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        m = open_existing({str(path)!r}, mode="r+")
        n = len(m)
        big = ["x" * 100_000] if {kind!r} == "strings" else (
            [np.zeros(100_000, np.int64)] if {kind!r} == "ragged" else np.zeros((10_000, 2, 3), np.int32))
        try:
            m.extend(big)
        except OSError as e:
            assert e.errno == errno.EFBIG, e
            assert len(m) == n
            m.extend(big[:0] if {kind!r} == "numpy" else [])
            print("EFBIG", e)
            sys.exit(0)
        sys.exit("the write did not fail")
    """)
    assert result.returncode == 0, result.stderr
    assert "EFBIG" in result.stdout and "File too large" in result.stdout
    assert snapshot(path) == before


def _nobody():
    try:
        import pwd
        return pwd.getpwnam("nobody").pw_uid
    except (ImportError, KeyError):
        return 65534


@pytest.fixture
def world_readable_map():
    """A map in a directory every user can enter, owned by root (the tests run as root)."""
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")  # pragma: no cover
    base = Path(tempfile.mkdtemp(prefix="mmap_ninja_perm_", dir="/tmp"))
    os.chmod(base, 0o755)
    path = base / "map"
    StringsMmap.from_strings(path, ["read", "only"]).close()
    os.chmod(path, 0o755)
    yield path
    import shutil
    shutil.rmtree(base)


def test_permission_denied_to_write_but_reading_works(world_readable_map):
    """As an unprivileged user (setuid in the child), a root-owned map is a read-only folder with
    read-only files: opening (with the default mode) and reading work, a write fails with a PermissionError
    naming the path and changes nothing."""
    path = world_readable_map
    before = snapshot(path)
    result = _run_child(f"""
        import os
        from mmap_ninja import StringsMmap, open_existing  # first: the interpreter lives under /root
        os.setgid({_nobody()}); os.setuid({_nobody()})
        with StringsMmap({str(path)!r}) as m:
            print("READ", list(m))
        m = open_existing({str(path)!r})
        print("READ", m[1]); m.refresh()
        try:
            m.append("x")
        except PermissionError as e:
            print("REFUSED", e)
        m.close()
    """)
    assert result.returncode == 0, result.stderr
    assert "READ ['read', 'only']" in result.stdout and "READ only" in result.stdout
    assert f"REFUSED [Errno {errno.EACCES}] cannot write to the map {path}" in result.stdout
    assert snapshot(path) == before


def test_read_only_files_in_a_writable_folder(world_readable_map):
    """The lock file can be made, but the column files cannot be opened for writing: a clear error."""
    path = world_readable_map
    os.chmod(path, 0o777)
    (path / ".lock").unlink()  # root's lock file would be refused first; let the user make its own
    before = {k: v for k, v in snapshot(path).items() if k != ".lock"}
    result = _run_child(f"""
        import os
        from mmap_ninja import StringsMmap
        os.setgid({_nobody()}); os.setuid({_nobody()})
        m = StringsMmap({str(path)!r})
        try:
            m.extend(["more"])
        except PermissionError as e:
            print("REFUSED", e)
        print("READ", list(StringsMmap({str(path)!r})), len(m))
    """)
    assert result.returncode == 0, result.stderr
    assert "REFUSED" in result.stdout and f"{path / 'data.bin'}" in result.stdout
    assert "READ ['read', 'only'] 2" in result.stdout
    assert {k: v for k, v in snapshot(path).items() if k != ".lock"} == before
