"""Defects found by trying the library adversarially, each with the test that failed before its fix."""

import json
import os

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, StringsMmap, np_from_ndarray, np_open_existing, verify

from tests.support import snapshot, write_header


def test_a_header_cannot_name_files_outside_its_map(tmp_path):
    (tmp_path / "precious.bin").write_bytes(b"my data")
    StringsMmap.from_strings(tmp_path / "m", ["a"]).close()
    header = json.loads((tmp_path / "m" / "header.json").read_text())
    header["columns"]["../precious"] = {"dtype": "|u1", "length": 0}
    write_header(tmp_path / "m", header)
    with pytest.raises(CorruptMapError, match="not a column name"):
        StringsMmap(tmp_path / "m")
    with pytest.raises(FileExistsError):
        StringsMmap.from_strings(tmp_path / "m", ["b"], overwrite=True)  # a header it cannot trust: refused
    assert (tmp_path / "precious.bin").read_bytes() == b"my data"


def test_a_two_dimensional_mask_assignment_keeps_the_checksums_true(tmp_path):
    m = np_from_ndarray(tmp_path / "n", np.zeros((4, 3), np.int16))
    m[np.asarray(m) == 0] = 5  # as with an np.memmap: mm[mm == 0] = 5
    assert np_open_existing(tmp_path / "n").tolist() == [[5, 5, 5]] * 4
    assert verify(tmp_path / "n", deep=True).ok


@pytest.mark.parametrize("timeout", ["1", float("nan"), -5, float("inf"), True])
def test_a_bad_lock_timeout_is_refused_when_opening(tmp_path, timeout):
    StringsMmap.from_strings(tmp_path / "m", ["a"]).close()
    with pytest.raises(ValueError, match="lock_timeout must be None"):
        StringsMmap(tmp_path / "m", lock_timeout=timeout)
    # Ten refusals leak no descriptor each: the count may move by a few from other tests' background threads
    # (fsspec's event loop, thread pools), never by ten.
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with pytest.raises(ValueError, match="lock_timeout"):
            StringsMmap.from_strings(tmp_path / "n", ["a"], lock_timeout=timeout)
    assert len(os.listdir("/proc/self/fd")) - fds < 5 and not (tmp_path / "n").exists()


def test_a_nested_block_that_raises_takes_its_appends_back(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", ["a"])
    with m.transaction():
        m.append("kept")
        with pytest.raises(ValueError), m.transaction():
            m.append("from a block that raised")
            raise ValueError("inner failed")
        assert m[:] == ["a", "kept"]
        m.append("after")
    assert StringsMmap(tmp_path / "m")[:] == ["a", "kept", "after"]
    assert verify(tmp_path / "m", deep=True).ok


def test_a_write_to_an_unfinished_build_says_why_it_is_refused(tmp_path):
    def rows():
        yield "a"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        StringsMmap.from_generator(tmp_path / "m", rows(), batch_size=1)
    partial = StringsMmap(tmp_path / "m", allow_unfinished=True)
    before = snapshot(tmp_path / "m")
    with pytest.raises(PermissionError, match=r"allow_unfinished=True.*re-run the build"):
        partial.append("b")
    assert snapshot(tmp_path / "m") == before


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda h: h["columns"].pop("offsets"), "lists no column 'offsets'"),
    (lambda h: h.__setitem__("kind", "weird"), "kind 'weird', which this mmap_ninja does not know"),
])
def test_verify_reports_a_map_no_reader_can_open(tmp_path, damage, problem):
    StringsMmap.from_strings(tmp_path / "m", ["a", "bb"]).close()
    header = json.loads((tmp_path / "m" / "header.json").read_text())
    damage(header)
    write_header(tmp_path / "m", header)
    report = verify(tmp_path / "m", deep=True)
    assert not report.ok and any(problem in p for p in report.problems)


def test_verify_checks_a_map_written_by_0_9_0(legacy_maps):
    report = verify(legacy_maps["strings"])
    assert report.ok and report.kind == "strings" and report.length and any("0.9.0" in n for n in report.notes)


def test_merge_refuses_the_shards_of_another_sharded_map(tmp_path):
    from mmap_ninja import ShardedMap, merge

    for name in ("a", "b"):
        StringsMmap.from_strings(tmp_path / name, [name]).close()
    first = merge(tmp_path / "first", [tmp_path / "a", tmp_path / "b"])
    shard = first.path / "shards" / "shard-000000"
    with pytest.raises(ValueError, match="is a shard of the sharded map"):
        merge(tmp_path / "second", [shard])
    assert ShardedMap(tmp_path / "first")[:] == ["a", "b"] and not (tmp_path / "second").exists()


def test_merge_checks_its_metadata_before_moving_anything(tmp_path):
    from mmap_ninja import merge

    StringsMmap.from_strings(tmp_path / "src", ["a"]).close()
    with pytest.raises(TypeError, match="metadata"):
        merge(tmp_path / "out", [tmp_path / "src"], metadata={"note": float("nan")})
    assert StringsMmap(tmp_path / "src")[:] == ["a"] and not (tmp_path / "out").exists()


def test_a_column_of_the_wrong_dtype_is_refused_not_misread(tmp_path):
    StringsMmap.from_strings(tmp_path / "m", ["hello", "world"]).close()
    header = json.loads((tmp_path / "m" / "header.json").read_text())
    header["columns"]["offsets"]["dtype"] = "<i4"
    write_header(tmp_path / "m", header)
    with pytest.raises(CorruptMapError, match="column 'offsets' the dtype int32"):
        StringsMmap(tmp_path / "m")
    assert any("column 'offsets' the dtype" in p for p in verify(tmp_path / "m").problems)


def test_refusing_to_replace_a_foreign_header_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "header.json").write_text('{"my": "own file"}')
    with pytest.raises(FileExistsError, match="cannot replace safely"):
        StringsMmap.from_strings(tmp_path / "notours", ["x"], overwrite=True)
    assert sorted(p.name for p in (tmp_path / "notours").iterdir()) == ["header.json"]


def test_0_9_0_calls_extend_verbose_and_flush(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["a"])
    m.extend(["b"], verbose=False)  # 0.9.0's StringsMmap.extend(list_of_strings, verbose=False)
    n = np_from_ndarray(tmp_path / "n", np.zeros((2, 2)))
    n[0] = 1.0
    n.flush()  # np.memmap.flush, which 0.9.0's numpy maps had
    assert StringsMmap(tmp_path / "s")[:] == ["a", "b"] and np_open_existing(tmp_path / "n")[0].tolist() == [1, 1]


def test_convert_with_a_codec_refuses_kinds_it_cannot_compress(tmp_path):
    from mmap_ninja.tools.conversion import convert

    np_from_ndarray(tmp_path / "n", np.zeros((2, 2))).close()
    with pytest.raises(ValueError, match="a numpy map cannot be re-encoded"):
        convert(tmp_path / "n", tmp_path / "z", codec="lz4", verbose=False)
    assert not (tmp_path / "z").exists()


def test_a_batch_mixing_ints_and_floats_cannot_round_an_int_silently(tmp_path):
    m = np_from_ndarray(tmp_path / "n", np.zeros((1, 2), np.float32))
    before = snapshot(tmp_path / "n")
    with pytest.raises(ValueError, match=r"item 2: .*16777217"):
        m.extend([np.zeros(2, np.float32), [16777217, 0]])  # NumPy alone would promote the batch to float64
    assert snapshot(tmp_path / "n") == before
    m.extend([[1.5, 2], np.ones(2)])
    assert np_open_existing(tmp_path / "n").tolist() == [[0, 0], [1.5, 2], [1, 1]]
