"""mmap_ninja.convert and ``mmap-ninja convert``: 0.9.0 maps (written by the real 0.9.0, see legacy_090.py) into
the current format, verified, published only when complete, the source untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import StringsMmap, open_existing
from mmap_ninja.kinds.legacy import LegacyMapWarning, open_legacy
from mmap_ninja.storage.store import CorruptMapError, NotAMapError
from mmap_ninja.tools.cli import main
from mmap_ninja.tools.conversion import Converted, convert

from tests.support import snapshot
from tests.support.legacy_090 import copy_map

CONVERTIBLE = ["strings", "ragged_flat", "ragged_nd", "ragged_float16", "numpy_c", "numpy_f", "numpy_f_extended",
               "numpy_int16", "numpy_datetime"]
SRC_DIR = str(Path(mmap_ninja.__file__).resolve().parent.parent)


def same(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        return isinstance(a, str) and a == b
    a, b = np.asarray(a), np.asarray(b)
    return bool(a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes())


def assert_converted(source: Path, target: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyMapWarning)
        legacy = open_legacy(source)
    converted = open_existing(target, mode="r")
    try:
        assert len(converted) == len(legacy) > 0
        for i in range(len(legacy)):
            assert same(converted[i], legacy.get(i)), (target, i, converted[i], legacy.get(i))
    finally:
        converted.close()


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_convert_reads_back_equal_and_leaves_the_source(legacy_maps: dict[str, Path], tmp_path: Path,
                                                        name: str) -> None:
    before = snapshot(legacy_maps[name])
    done = convert(legacy_maps[name], tmp_path / "new", verbose=False)
    assert done == Converted(tmp_path / "new", name.split("_")[0], len(open_legacy(legacy_maps[name])))
    assert_converted(legacy_maps[name], tmp_path / "new")
    assert entries(tmp_path) == ["new"]  # no temporary directory left
    assert snapshot(legacy_maps[name]) == before


@pytest.mark.parametrize("name", ["crash_strings_ends", "crash_strings_data", "crash_ragged_flat",
                                  "crash_ragged_nd_nested", "crash_numpy"])
def test_crash_leftovers_convert_their_complete_samples(legacy_maps: dict[str, Path], tmp_path: Path,
                                                        name: str) -> None:
    with pytest.warns(LegacyMapWarning, match="interrupted"):
        done = convert(legacy_maps[name], tmp_path / "new", verbose=False)
    assert_converted(legacy_maps[name], tmp_path / "new")
    assert len(open_existing(tmp_path / "new", mode="r")) == done.length


@pytest.mark.parametrize("name", ["strings_zstd", "strings_zstd_dict"])
def test_zstd_strings_stay_zstd(legacy_maps: dict[str, Path], tmp_path: Path, name: str) -> None:
    convert(legacy_maps[name], tmp_path / "new", verbose=False)
    assert_converted(legacy_maps[name], tmp_path / "new")
    assert "zstd" in (tmp_path / "new" / "header.json").read_text()


def test_a_failed_zstd_conversion_leaves_nothing(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    # Whatever the core says about zstd_level, no partial map may stay behind if the build fails.
    try:
        convert(legacy_maps["strings_zstd"], tmp_path / "new", verbose=False)
    except TypeError:
        assert entries(tmp_path) == []
    else:
        assert entries(tmp_path) == ["new"]


def test_a_damaged_sample_stops_the_conversion_and_leaves_nothing(legacy_maps: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    source = copy_map(legacy_maps["strings"], tmp_path / "source")
    data = bytearray((source / "data.ninja").read_bytes())
    data[-1] = 0xFF  # the last string's last byte: found only after the others were written
    (source / "data.ninja").write_bytes(bytes(data))
    before = snapshot(source)
    (tmp_path / "out").mkdir()
    with pytest.raises(CorruptMapError, match=r"sample 9 of the mmap_ninja 0.9.0 map .* not UTF-8"):
        convert(source, tmp_path / "out" / "new", verbose=False, batch_size=2)
    assert entries(tmp_path / "out") == []
    assert snapshot(source) == before


def test_small_batches(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    convert(legacy_maps["ragged_nd"], tmp_path / "new", verbose=False, batch_size=3)
    assert_converted(legacy_maps["ragged_nd"], tmp_path / "new")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            convert(legacy_maps["ragged_nd"], tmp_path / f"bad{bad}", verbose=False, batch_size=bad)  # type: ignore
    assert entries(tmp_path) == ["new"]


def test_refusals(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    native = StringsMmap.from_strings(tmp_path / "native", ["a"])
    native.close()
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    source = copy_map(legacy_maps["strings"], tmp_path / "source")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="already in the current format"):
        convert(tmp_path / "native", tmp_path / "new", verbose=False)
    with pytest.raises(NotAMapError, match="does not exist"):
        convert(tmp_path / "missing", tmp_path / "new", verbose=False)
    with pytest.raises(NotAMapError, match=r"holds no map written by mmap_ninja 0\.9\.0 or later and no files"):
        convert(tmp_path / "empty", tmp_path / "new", verbose=False)
    with pytest.raises(FileExistsError, match="taken already exists"):
        convert(source, tmp_path / "taken", verbose=False)
    with pytest.raises(NotAMapError, match="does not exist"):  # refused before any folder of DST is created
        convert(tmp_path / "missing", tmp_path / "no" / "such" / "new", verbose=False)
    with pytest.raises(ValueError, match="inside the source"):
        convert(source, source / "v1", verbose=False)
    assert snapshot(tmp_path) == before and not (tmp_path / "no").exists()
    assert entries(tmp_path) == ["empty", "native", "source", "taken"]


def test_progress_bars_when_verbose(legacy_maps: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    convert(legacy_maps["numpy_c"], tmp_path / "new")
    err = capsys.readouterr().err
    assert "converting numpy_c" in err and "verifying numpy_c" in err and "6/6" in err
    convert(legacy_maps["numpy_c"], tmp_path / "quiet", verbose=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC_DIR}
    return subprocess.run([sys.executable, "-m", "mmap_ninja", *args], capture_output=True, text=True, env=env)


def test_cli_converts(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    done = run_cli("convert", str(legacy_maps["ragged_nd"]), str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"converted {legacy_maps['ragged_nd']} (ragged, 8 samples) into {tmp_path / 'new'}\n"
    assert "converting ragged_nd" in done.stderr and "Traceback" not in done.stderr
    assert_converted(legacy_maps["ragged_nd"], tmp_path / "new")


def test_cli_bad_input_is_one_line_and_status_1_or_3(legacy_maps: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    StringsMmap.from_strings(tmp_path / "native", ["a"]).close()
    corrupt = copy_map(legacy_maps["numpy_c"], tmp_path / "corrupt")
    (corrupt / "dtype.ninja").write_bytes(b"void96")
    cases = {
        "missing": ([str(tmp_path / "missing"), str(tmp_path / "a")], "does not exist"),
        "not a map": ([str(tmp_path / "empty"), str(tmp_path / "b")], "holds no map written by mmap_ninja 0.9.0"),
        "native": ([str(tmp_path / "native"), str(tmp_path / "c")], "already in the current format"),
        "corrupt": ([str(corrupt), str(tmp_path / "d")], "dtype.ninja holds the dtype name 'void96'"),
        "taken": ([str(legacy_maps["strings"]), str(tmp_path / "empty")], "already exists"),
    }
    for case, (args, message) in cases.items():
        status = 3 if case in ("missing", "not a map") else 1  # 3: SRC is nothing convert can read
        assert main(["convert", "-q", *args]) == status, case
        out, err = capsys.readouterr()
        start = "mmap-ninja convert: not a map: " if status == 3 else "mmap-ninja convert: error: "
        assert out == "" and err.count("\n") == 1 and err.startswith(start), (case, err)
        assert message in err, (case, err)
    assert entries(tmp_path) == ["corrupt", "empty", "native"]


def test_cli_warnings_are_one_line(legacy_maps: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "-q", str(legacy_maps["crash_ragged_flat"]), str(tmp_path / "new")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("mmap-ninja convert: warning: ") and "interrupted" in err
    assert out.startswith("converted ")


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["convert"], ["convert", "a"], ["frobnicate"], ["convert", "--batch-size", "0", "a", "b"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2, argv
        assert "usage: mmap-ninja" in capsys.readouterr().err
    done = run_cli("convert")
    assert done.returncode == 2 and "usage: mmap-ninja convert" in done.stderr and "Traceback" not in done.stderr


def test_codec_none_stores_a_090_zstd_map_uncompressed(legacy_maps: dict[str, Path], tmp_path: Path) -> None:
    """--codec none (store uncompressed) on a 0.9.0 map of zstd strings kept zstd, as giving no codec does."""
    source = legacy_maps["strings_zstd"]
    convert(source, tmp_path / "plain", verbose=False, codec="none")
    plain = StringsMmap(tmp_path / "plain", mode="r")
    assert plain.codec is None and list(plain) == open_legacy(source).get_many(np.arange(len(plain)))
    convert(source, tmp_path / "kept", verbose=False)  # no codec: zstd stays, at the same level
    assert StringsMmap(tmp_path / "kept", mode="r").codec == "zstd"
