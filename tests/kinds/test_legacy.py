"""Reading maps written by the real mmap_ninja 0.9.0 (see legacy_090.py): same samples as 0.9.0 reads, O(1) open,
read-only files, crash leftovers, damaged files."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmap_ninja import StringsMmap
from mmap_ninja.kinds.legacy import (
    LegacyMapWarning,
    LegacyNumpy,
    LegacyRagged,
    LegacyStrings,
    is_legacy_map,
    legacy_write_refusal,
    open_legacy,
)
from mmap_ninja.storage.store import CorruptMapError, NotAMapError

from tests.support import peak_bytes_in_a_fresh_process, snapshot
from tests.support.legacy_090 import Read090, copy_map

CLEAN = ["strings", "strings_zstd", "strings_zstd_dict", "ragged_flat", "ragged_nd", "ragged_float16", "numpy_c",
         "numpy_f", "numpy_f_extended", "numpy_int16", "numpy_datetime"]
# name -> (samples 0.9.0 claims, samples that are complete)
CRASHED = {"crash_strings_ends": (9, 7), "crash_strings_data": (9, 7), "crash_ragged_flat": (7, 5),
           "crash_ragged_nd": (8, 7), "crash_ragged_nd_nested": (8, 6), "crash_numpy": (4, 4)}
KIND_OF = {"strings": LegacyStrings, "ragged": LegacyRagged, "numpy": LegacyNumpy}


def assert_same_sample(ours: Any, theirs: tuple[str, Any], where: str) -> None:
    tag, value = theirs
    if tag == "array":
        assert isinstance(ours, np.ndarray), where
        assert ours.shape == value.shape and ours.dtype == value.dtype, (where, ours, value)
        assert np.array_equal(ours, value), (where, ours, value)
        assert not ours.flags.writeable, where
    elif isinstance(value, str):
        assert ours == value, where
    elif isinstance(value, np.generic):  # a sample of a numpy map of shape (n,)
        assert type(ours) is type(value) and ours == value, where
    else:  # 0.9.0 gave `.item()` for a 0-d sample of a map of 1-D samples: we give the 0-d array
        assert isinstance(ours, np.ndarray) and ours.ndim == 0 and ours.item() == value, (where, ours, value)
        assert type(ours.item()) is type(value) and not ours.flags.writeable, where


def open_quietly(path: Path) -> Any:
    """`open_legacy` without the warnings about crash leftovers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyMapWarning)
        return open_legacy(path)


@pytest.mark.parametrize("name", CLEAN)
def test_reads_what_090_reads(legacy_maps: dict[str, Path], legacy_reads: dict[str, Read090], name: str) -> None:
    path = legacy_maps[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a map 0.9.0 wrote completely gives no warning
        m: Any = open_legacy(path)
    _, theirs = legacy_reads[name]
    reader_class: type = type(m)
    assert m.kind == name.split("_")[0] and reader_class is KIND_OF[m.kind] and m.path == path
    assert len(m) == len(theirs)
    for i, expected in enumerate(theirs):
        if expected[0] == "error":
            # 0.9.0 cannot read a 0-d sample in a map of N-d samples (it reshapes its one element to (0,)).
            assert name == "ragged_nd" and i == 3 and expected[1] == "ValueError"
            sample = m.get(i)
            assert sample.shape == () and sample.item() == 5.0 and not sample.flags.writeable
            continue
        assert_same_sample(m.get(i), expected, f"{name}[{i}]")
        assert_same_sample(m.get(i - len(m)), expected, f"{name}[{i - len(m)}]")
    order = np.random.default_rng(0).permutation(len(m))
    many = m.get_many(order)
    assert len(many) == len(m)
    for position, sample in zip(order.tolist(), many):
        single = m.get(position)
        if isinstance(single, str):
            assert sample == single
        else:
            assert np.asarray(sample).shape == np.asarray(single).shape
            assert np.array_equal(sample, single)
    with pytest.raises(IndexError, match=f"index {len(m)} is out of range for a map of length {len(m)}"):
        m.get(len(m))


@pytest.mark.parametrize("name", ["numpy_c", "numpy_f", "numpy_f_extended", "numpy_int16", "numpy_datetime"])
def test_numpy_array_is_the_whole_map_as_090_memmap_saw_it(legacy_maps: dict[str, Path],
                                                            legacy_reads: dict[str, Read090], name: str) -> None:
    m = open_legacy(legacy_maps[name])
    assert isinstance(m, LegacyNumpy)
    _, theirs = legacy_reads[name]
    expected = np.stack([np.asarray(value) for _, value in theirs])
    assert m.array.shape == expected.shape and m.array.dtype == expected.dtype
    assert np.array_equal(m.array, expected) and not m.array.flags.writeable
    assert m.sample_shape == expected.shape[1:]
    if name.startswith("numpy_f"):
        assert m.order == "F" and m.array.flags.f_contiguous and not m.array.flags.c_contiguous
    elif name == "numpy_c":
        assert m.order == "C" and m.array.flags.c_contiguous


def test_zstd_strings_keep_their_settings(legacy_maps: dict[str, Path]) -> None:
    plain, zstd, zstd_dict = (open_legacy(legacy_maps[n]) for n in ("strings", "strings_zstd", "strings_zstd_dict"))
    assert isinstance(plain, LegacyStrings) and isinstance(zstd, LegacyStrings) and isinstance(zstd_dict, LegacyStrings)
    assert not plain.compressed and plain.zstd_level is None
    assert zstd.compressed and zstd.zstd_level == 5 and zstd.zstd_dict is None
    assert zstd_dict.zstd_level == 3 and zstd_dict.zstd_dict is not None
    assert zstd_dict.zstd_dict == (legacy_maps["strings_zstd_dict"] / "zstd_dict.ninja").read_bytes()


def test_a_stale_zstd_level_file_is_detected(legacy_maps: dict[str, Path], legacy_reads: dict[str, Read090]) -> None:
    path = legacy_maps["strings_stale_zstd"]
    _, theirs = legacy_reads["strings_stale_zstd"]
    assert all(tag == "error" for tag, _ in theirs)  # 0.9.0 tries to decompress plain UTF-8
    with pytest.warns(LegacyMapWarning, match="zstd_level.ninja is stale"):
        m = open_legacy(path)
    assert isinstance(m, LegacyStrings) and not m.compressed
    plain = open_legacy(legacy_maps["strings"])
    assert [m.get(i) for i in range(len(m))] == [plain.get(i) for i in range(len(m))]


def test_zstd_strings_read_from_many_threads(legacy_maps: dict[str, Path]) -> None:
    m = open_legacy(legacy_maps["strings_zstd_dict"])
    expected = [m.get(i) for i in range(len(m))]
    results: dict[int, list[str]] = {}

    def read(worker: int) -> None:
        order = np.random.default_rng(worker).permutation(len(m))
        got = [m.get(i) for i in order.tolist() * 5]
        results[worker] = [got[k] for k in np.argsort(order).tolist()]

    threads = [threading.Thread(target=read, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == expected for r in results.values())


def test_zstd_without_zstandard_says_what_to_install(legacy_maps: dict[str, Path]) -> None:
    code = ("import sys; sys.modules['zstandard'] = None\n"
            "from mmap_ninja.kinds.legacy import open_legacy\n"
            f"print(open_legacy({str(legacy_maps['strings'])!r}).get(1))\n"
            f"open_legacy({str(legacy_maps['strings_zstd'])!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "hello\n"  # plain maps need no zstandard
    assert "ImportError" in done.stderr and "pip install zstandard" in done.stderr


@pytest.mark.parametrize("name", sorted(CRASHED))
def test_crash_leftovers_read_the_complete_samples_with_a_warning(legacy_maps: dict[str, Path],
                                                                  legacy_reads: dict[str, Read090], name: str) -> None:
    claimed, complete = CRASHED[name]
    path = legacy_maps[name]
    with pytest.warns(LegacyMapWarning, match="interrupted") as caught:
        m: Any = open_legacy(path)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert len(m) == complete
    _, theirs = legacy_reads[name]
    assert len(theirs) == claimed
    for i in range(complete):
        if theirs[i][0] == "error":
            assert theirs[i][1] == "ValueError" and m.get(i).shape == ()  # the 0-d sample of an N-d map
        else:
            assert_same_sample(m.get(i), theirs[i], f"{name}[{i}]")
    if name == "crash_strings_data":
        assert theirs[complete] == ("value", "lost")  # 0.9.0 reads the torn string; we stop before it
    with pytest.raises(IndexError):
        m.get(complete)


def test_warning_names_the_disagreeing_files(legacy_maps: dict[str, Path]) -> None:
    with pytest.warns(LegacyMapWarning, match=r"index files disagree \(starts: 7, ends: 7, shapes: 5 samples\)"):
        open_legacy(legacy_maps["crash_ragged_flat"])
    with pytest.warns(LegacyMapWarning, match=r"data.ninja holds 24 bytes past the 4 rows"):
        open_legacy(legacy_maps["crash_numpy"])


@pytest.mark.parametrize("kind", ["strings", "ragged_flat", "ragged_nd", "numpy"])
def test_open_is_o1_in_memory(big_legacy_maps: dict[str, Path], kind: str) -> None:
    path = big_legacy_maps[kind]
    peak = peak_bytes_in_a_fresh_process(f"from mmap_ninja.kinds.legacy import open_legacy\npath = {str(path)!r}",
                                         "m = open_legacy(path)")
    m: Any = open_legacy(path)
    assert len(m) == 1_000_000
    assert peak < 64 * 1024, f"opening a 0.9.0 map of 1M samples allocated {peak} bytes"
    near_end = m.get(999_998)
    if kind == "strings":
        assert near_end == "999998"
    elif kind == "ragged_flat":
        assert near_end.tolist() == [0, 1]
    elif kind == "ragged_nd":
        assert near_end.shape == (1, 1)


def test_read_only_files_are_read_and_left_unchanged(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    names = ["strings_zstd_dict", "ragged_nd", "numpy_f"]
    copies = [copy_map(legacy_maps[n], tmp_path / n) for n in names]
    for directory in copies:
        for root, _, files in os.walk(directory):
            for f in files:
                os.chmod(os.path.join(root, f), stat.S_IRUSR | stat.S_IRGRP)
            os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)
    before = [snapshot(c) for c in copies]
    mtimes = [[p.stat().st_mtime_ns for p in sorted(c.rglob("*"))] for c in copies]
    try:
        for directory in copies:
            m = open_legacy(directory)
            samples = [m.get(i) for i in range(len(m))]
            assert samples and len(m.get_many(np.arange(len(m)))) == len(m)
            if isinstance(m, LegacyNumpy):
                assert not m.array.flags.writeable
                with pytest.raises(ValueError, match="read-only"):
                    m.array[0] = 0
            if isinstance(m, LegacyRagged):
                with pytest.raises(ValueError, match="read-only"):
                    m.get(0)[...] = 0
        assert [snapshot(c) for c in copies] == before
        assert [[p.stat().st_mtime_ns for p in sorted(c.rglob("*"))] for c in copies] == mtimes
    finally:
        for directory in copies:
            for root, _, _ in os.walk(directory):
                os.chmod(root, stat.S_IRWXU)


def test_is_legacy_map(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    assert all(is_legacy_map(legacy_maps[n]) for n in CLEAN)
    assert is_legacy_map(str(legacy_maps["strings"]))
    native = StringsMmap.from_strings(tmp_path / "native", ["a"])
    native.close()
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    assert not is_legacy_map(tmp_path / "native")
    assert not is_legacy_map(tmp_path / "empty")
    assert not is_legacy_map(tmp_path / "missing")
    assert not is_legacy_map(tmp_path / "file")
    with pytest.raises(NotAMapError, match="current format"):
        open_legacy(tmp_path / "native")
    with pytest.raises(NotAMapError, match=r"no type\.ninja"):
        open_legacy(tmp_path / "missing")


def test_write_refusal_gives_the_convert_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    message = legacy_write_refusal("old maps/ragged/")
    source = str(tmp_path / "old maps" / "ragged")
    assert "mmap_ninja 0.9.0" in message and "crash-safely" in message
    assert message.startswith(source)
    command = message.split("with: ", 1)[1]
    assert shlex.split(command) == ["mmap-ninja", "convert", source, source + "-v1"]


# ---------------------------------------------------------------------------------------------- damaged maps


def damage(tmp_path: Path, legacy_maps: dict[str, Path], name: str, file: str, content: bytes | None) -> Path:
    path = copy_map(legacy_maps[name], tmp_path / name)
    if content is None:
        (path / file).unlink()
    else:
        (path / file).write_bytes(content)
    return path


@pytest.mark.parametrize("name, file, content, message", [
    ("strings", "starts/dtype.ninja", None, r"starts/dtype.ninja is missing"),
    ("strings", "ends/shape.ninja", b"\x01\x00\x00\x00", r"ends/shape.ninja is 4 bytes long"),
    ("strings", "ends/order.ninja", b"X", r"ends/order.ninja holds 'X'"),
    ("numpy_c", "dtype.ninja", b"void96", r"dtype.ninja holds the dtype name 'void96'"),
    ("numpy_c", "dtype.ninja", b"str64", r"dtype.ninja holds the dtype name 'str64'"),
    ("numpy_c", "dtype.ninja", b"object", r"dtype.ninja holds the dtype name 'object'"),
    ("numpy_c", "dtype.ninja", b"\xff\xfe", r"dtype.ninja holds .* not the ASCII text"),
    ("numpy_c", "data.ninja", b"\x00" * 10, r"data.ninja holds 10 bytes, but .*shape.ninja says .* truncated"),
    ("numpy_c", "shape.ninja", b"", r"shape.ninja is empty"),
    ("ragged_flat", "starts/dtype.ninja", b"float64", r"starts/dtype.ninja says float64"),
    ("ragged_flat", "shapes_are_flat.ninja", b"\x02\x00", r"shapes_are_flat.ninja holds"),
    ("ragged_nd", "shapes/type.ninja", b"numpy", r"shapes is not the ragged map of shape vectors"),
    ("strings", "type.ninja", b"asd", r"type.ninja holds 'asd'"),
    ("strings_zstd", "zstd_level.ninja", b"three", r"zstd_level.ninja holds 'three'"),
])
def test_damaged_files_are_named(legacy_maps: dict[str, Path], tmp_path: Path, name: str, file: str,
                                 content: bytes | None, message: str) -> None:
    path = damage(tmp_path, legacy_maps, name, file, content)
    before = snapshot(path)
    with pytest.raises(CorruptMapError, match=message) as error:
        open_quietly(path)
    assert str(path) in str(error.value)
    assert snapshot(path) == before


def write_index(directory: Path, values: list[int]) -> None:
    (directory / "data.ninja").write_bytes(np.array(values, dtype="<i8").tobytes())
    (directory / "shape.ninja").write_bytes(np.array([len(values)], dtype="<u8").tobytes())


def test_damaged_offsets_are_errors_naming_the_sample(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    path = copy_map(legacy_maps["strings"], tmp_path / "strings")
    ends = np.fromfile(path / "ends" / "data.ninja", dtype="<i8").tolist()
    ends[2] = 10**9  # past the data, in the middle (the last end is intact)
    write_index(path / "ends", ends)
    m = open_legacy(path)
    assert m.get(1) == "hello"
    with pytest.raises(CorruptMapError, match=r"sample 2 of the mmap_ninja 0.9.0 map .* outside data.ninja"):
        m.get(2)
    with pytest.raises(CorruptMapError, match="sample 2 "):
        m.get_many(np.array([0, 2]))

    path = copy_map(legacy_maps["ragged_flat"], tmp_path / "ragged")
    starts = np.fromfile(path / "starts" / "data.ninja", dtype="<i8").tolist()
    starts[0] += 1  # now 4 elements where shapes/ says 5
    write_index(path / "starts", starts)
    m = open_legacy(path)
    with pytest.raises(CorruptMapError, match=r"sample 0 .* elements 1:5 of \d+ and shapes/ gives the length 5"):
        m.get(0)
    with pytest.raises(CorruptMapError, match="sample 0 "):
        m.get_many(np.array([1, 0]))
    ends = np.fromfile(path / "ends" / "data.ninja", dtype="<i8").tolist()
    starts[0], ends[0] = 10**6, 10**6 + 5  # the right length, past the end of the data
    write_index(path / "starts", starts)
    write_index(path / "ends", ends)
    m = open_legacy(path)
    with pytest.raises(CorruptMapError, match=r"sample 0 .* elements 1000000:1000005 of 13 and shapes/"):
        m.get(0)
    with pytest.raises(CorruptMapError, match="sample 0 "):
        m.get_many(np.array([1, 0]))

    path = copy_map(legacy_maps["ragged_nd"], tmp_path / "nd")
    dims = np.fromfile(path / "shapes" / "data.ninja", dtype="<i8")
    dims[0] = 7  # sample 0 is (2, 3): now (7, 3)
    (path / "shapes" / "data.ninja").write_bytes(dims.tobytes())
    m = open_legacy(path)
    with pytest.raises(CorruptMapError, match=r"sample 0 .* shapes/ gives the shape \(7, 3\)"):
        m.get(0)


def test_bad_utf8_and_bad_zstd_frames_are_errors_naming_the_sample(legacy_maps: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    path = copy_map(legacy_maps["strings"], tmp_path / "strings")
    data = bytearray((path / "data.ninja").read_bytes())
    data[0:1] = b"\xff"  # sample 1 ("hello") starts at byte 0, after the empty sample 0
    (path / "data.ninja").write_bytes(bytes(data))
    m = open_legacy(path)
    with pytest.raises(CorruptMapError, match=r"sample 1 .* not UTF-8"):
        m.get(1)
    with pytest.raises(CorruptMapError, match=r"sample 1 .* not UTF-8"):
        m.get_many(np.array([0, 1]))

    path = copy_map(legacy_maps["strings_zstd"], tmp_path / "zstd")
    data = bytearray((path / "data.ninja").read_bytes())
    first_end = int(np.fromfile(path / "ends" / "data.ninja", dtype="<i8")[0])
    data[first_end + 6:first_end + 12] = b"\x00" * 6  # inside the second frame
    (path / "data.ninja").write_bytes(bytes(data))
    zstd_map: Any = open_legacy(path)
    assert zstd_map.get(0).startswith("record 0")
    with pytest.raises(CorruptMapError, match=r"sample 1 .* zstd frame does not decompress"):
        zstd_map.get(1)


def test_info_names_a_090_maps_zstd_codec(legacy_maps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`mmap-ninja info` on a 0.9.0 map of zstd strings said nothing of its compression."""
    import json

    from mmap_ninja.tools.cli import main

    assert main(["info", "--json", str(legacy_maps["strings_zstd"])]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == {"name": "zstd", "level": 5}
    assert main(["info", "--json", str(legacy_maps["strings_zstd_dict"])]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == {"name": "zstd", "level": 3, "dictionary": True}
    assert main(["info", "--json", str(legacy_maps["strings"])]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == "none"
