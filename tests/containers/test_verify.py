"""Checksums of every committed byte range, and `verify` finding damage: truncation, flipped bits, zero pages."""

import json
import os

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, NotAMapError, RaggedMmap, StringsMmap, np_from_ndarray, verify
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id

TEXTS = [f"sample {i}: " + "abc" * (i % 40) for i in range(3000)]


@pytest.fixture
def strings(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", TEXTS, batch_size=500)
    return tmp_path / "s"


def _flip(path, offset, bit=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def test_a_sound_map_verifies_deeply_and_every_byte_is_covered(strings):
    report = verify(strings, deep=True)
    assert report.ok and report.kind == "strings" and report.length == len(TEXTS), report.problems
    committed = sum((strings / f"{name}.bin").stat().st_size for name in ("data", "offsets"))
    assert report.bytes_hashed == committed


def test_each_commit_adds_one_record_per_column_it_grew(strings):
    records = np.fromfile(strings / "checksums.bin", dtype=RECORD_DTYPE)
    data_records = records[records["column"] == column_id("data")]
    assert len(data_records) == len(TEXTS) // 500  # six batches, one record each
    assert data_records["start"][0] == 0 and (data_records["start"][1:] == data_records["stop"][:-1]).all()


@pytest.mark.parametrize("column", ["data", "offsets"])
def test_a_flipped_bit_is_reported_with_the_file_and_the_samples(strings, column):
    size = (strings / f"{column}.bin").stat().st_size
    _flip(strings / f"{column}.bin", size // 2, bit=3)
    report = verify(strings, deep=True)
    assert not report.ok
    assert any(f"{column}.bin bytes" in p and "samples" in p for p in report.problems), report.problems


def test_a_zero_filled_page_is_found_only_by_a_deep_verify(strings):
    with open(strings / "data.bin", "r+b") as f:
        f.seek(4096)
        f.write(b"\0" * 4096)
    assert verify(strings).ok  # the structure is intact ...
    problems = verify(strings, deep=True).problems
    assert problems and all("do not match their checksum" in p for p in problems)


def test_truncation_and_decreasing_offsets_are_structural_problems(strings, tmp_path):
    os.truncate(strings / "data.bin", 100)
    assert any("data.bin is truncated" in p for p in verify(strings).problems)
    StringsMmap.from_strings(tmp_path / "o", TEXTS[:10])
    offsets = np.fromfile(tmp_path / "o" / "offsets.bin", dtype="<i8")
    offsets[4] = offsets[6]
    offsets.tofile(tmp_path / "o" / "offsets.bin")
    assert any("offsets.bin decreases at sample(s) [4]" in p for p in verify(tmp_path / "o").problems)


def test_a_damaged_header_is_refused_by_its_own_checksum(strings):
    text = (strings / "header.json").read_text()
    damaged = text.replace('"kind": "strings"', '"kind": "ragged"')
    (strings / "header.json").write_text(damaged)
    with pytest.raises(CorruptMapError, match="checksum"):
        StringsMmap(strings)
    assert any("checksum" in p for p in verify(strings).problems)


def test_a_stale_temporary_header_is_noted_and_harmless(strings):
    (strings / "header.json.tmp").write_text('{"format": "mmap_ninja", "version": [2, 0]')
    report = verify(strings, deep=True)
    assert report.ok and any("header.json.tmp" in n for n in report.notes)


def test_in_place_writes_keep_the_checksums_true(tmp_path):
    s = StringsMmap.from_strings(tmp_path / "s", TEXTS[:100])
    s[5] = "sample 5: " + "xyz" * 5
    r = RaggedMmap.from_lists(tmp_path / "r", [np.arange(4), np.arange(6)])
    r[1] = np.arange(6)[::-1]
    n = np_from_ndarray(tmp_path / "n", np.zeros((50, 3)))
    n[10] = 1.5
    n[20:30, 1] = 7
    with n.transaction():
        n.append(np.ones(3))
        n[50] = 2.0  # a sample of this very transaction
    for name in ("s", "r", "n"):
        report = verify(tmp_path / name, deep=True)
        assert report.ok, report.problems


def test_a_thousand_random_single_bit_flips_are_all_detected(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(i % 17 + 1, dtype=np.int32) for i in range(400)],
                              batch_size=50)
    files = {name: (tmp_path / "m" / f"{name}.bin").read_bytes() for name in ("data", "offsets", "shape_offsets",
                                                                             "dims")}
    m.close()
    rng = np.random.default_rng(7)
    for _ in range(1000):
        name = list(files)[rng.integers(len(files))]
        offset, bit = int(rng.integers(len(files[name]))), int(rng.integers(8))
        _flip(tmp_path / "m" / f"{name}.bin", offset, bit)
        assert not verify(tmp_path / "m", deep=True).ok, (name, offset, bit)
        _flip(tmp_path / "m" / f"{name}.bin", offset, bit)  # undo
    assert verify(tmp_path / "m", deep=True).ok


def test_verify_refuses_a_path_with_no_map(tmp_path):
    with pytest.raises(NotAMapError):
        verify(tmp_path / "nothing")


def test_maps_without_checksums_still_verify_structurally(strings):
    header = json.loads((strings / "header.json").read_text())
    del header["checksums"], header["checksum"], header["columns"]["checksums"]
    (strings / "header.json").write_text(json.dumps(header))
    report = verify(strings, deep=True)
    assert report.ok and any("no checksums" in n for n in report.notes)
    m = StringsMmap(strings)
    m.append("still writable")  # and appends without records
    assert StringsMmap(strings)[-1] == "still writable"


@pytest.mark.parametrize("item", [0, 1])  # a slot's hash, a slot's row
def test_a_flipped_bit_in_the_key_index_is_found_by_a_deep_verify(tmp_path, item):
    """The key index (derived-key.slots) has no checksum records (its writer updates it in place); a deep verify
    checks it instead by looking every row's key up: a damaged slot makes ``index_of`` miss a row, and a deep
    verify that called such a map sound would be wrong."""
    from mmap_ninja import RecordsMmap

    rec = RecordsMmap.from_dict(tmp_path / "rec", {"id": [f"k{i}" for i in range(20)], "x": np.arange(20)}, key="id")
    rec.close()
    assert verify(tmp_path / "rec", deep=True).ok
    path = tmp_path / "rec" / "derived-key.slots.bin"
    slots = np.fromfile(path, dtype="<i8").reshape(-1, 2)
    used = int(np.flatnonzero(slots[:, 1] >= 0)[0])
    slots[used, item] ^= 1 << 5
    slots.tofile(path)
    assert verify(tmp_path / "rec").ok  # structure only: the index is not looked at
    report = verify(tmp_path / "rec", deep=True)
    assert not report.ok
    assert "derived-key.slots.bin" in report.problems[0] and "row" in report.problems[0]


def test_a_deep_verify_checks_the_key_index_of_an_unfinished_build_too(tmp_path):
    """An interrupted keyed build is sound (with a note) to a structural verify; the deep one could not open it to
    check the key index and called it damaged."""
    from mmap_ninja import RecordsMmap

    def rows():
        for i in range(5):
            yield {"id": f"k{i}", "x": i}
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        RecordsMmap.from_generator(tmp_path / "rec", rows(), 2, key="id")
    report = verify(tmp_path / "rec", deep=True)
    assert report.ok, report.problems
    assert any("unfinished build" in note for note in report.notes)


def test_a_shallow_verify_checks_every_field_index_of_a_records_map(tmp_path):
    from mmap_ninja import RecordsMmap

    rows = [{"text": f"row {i}", "values": np.arange(i + 1, dtype=np.int32), "label": i} for i in range(4)]
    RecordsMmap.from_generator(tmp_path / "rec", rows, 2)
    assert verify(tmp_path / "rec").ok
    offsets = np.fromfile(tmp_path / "rec" / "text.offsets.bin", dtype="<i8")
    offsets[-1] += 100  # past the committed data
    offsets.tofile(tmp_path / "rec" / "text.offsets.bin")
    values_offsets = np.fromfile(tmp_path / "rec" / "values.offsets.bin", dtype="<i8")
    values_offsets[2] = values_offsets[1] - 1  # decreasing
    values_offsets.tofile(tmp_path / "rec" / "values.offsets.bin")
    problems = verify(tmp_path / "rec").problems
    assert any("text.offsets.bin ends at 120, but the committed data holds 20" in p for p in problems), problems
    assert any("values.offsets.bin decreases at sample(s) [1]" in p for p in problems), problems
    deep = verify(tmp_path / "rec", deep=True).problems
    assert any("text.offsets.bin bytes" in p and "(the offsets of samples" in p for p in deep), deep


def _shapes_damaged(path, prefix=""):
    """Sample 0's first dimension set to 1000 in the map's shapes column."""
    dims = np.fromfile(path / f"{prefix}dims.bin", dtype="<i8")
    dims[0] = 1000
    dims.tofile(path / f"{prefix}dims.bin")


def test_a_shallow_verify_checks_ragged_shapes_against_the_offsets(tmp_path):
    from mmap_ninja.tools.cli import main

    samples = [np.arange(6, dtype=np.float32).reshape(2, 3) * i for i in range(5)]
    m = RaggedMmap.from_generator(tmp_path / "r", samples, 2)
    m.close()
    assert verify(tmp_path / "r").ok and main(["verify", str(tmp_path / "r")]) == 0
    _shapes_damaged(tmp_path / "r")
    with pytest.raises(CorruptMapError, match="shape"):
        RaggedMmap(tmp_path / "r")[0]
    problems = verify(tmp_path / "r").problems
    assert problems == ["dims.bin (or shape_offsets.bin) is corrupt: sample 0 has the shape (1000, 3) of 3000 "
                        "elements, but its offsets give it 6 elements"], problems
    assert main(["verify", str(tmp_path / "r")]) == 1


def test_a_shallow_verify_refuses_negative_dimensions_and_names_each_sample(tmp_path):
    samples = [np.zeros((0, 3), dtype=np.int16)] * 3 + [np.ones((2, 2), dtype=np.int16)]
    RaggedMmap.from_generator(tmp_path / "r", samples, 2).close()
    assert verify(tmp_path / "r").ok
    dims = np.fromfile(tmp_path / "r" / "dims.bin", dtype="<i8")
    dims[[1, 3]] = -3  # (0, -3): still 0 elements, but no array has that shape
    dims.tofile(tmp_path / "r" / "dims.bin")
    problems = verify(tmp_path / "r").problems
    assert [p.split(": ", 1)[1] for p in problems] == ["sample 0 has the shape (0, -3): a dimension is negative",
                                                       "sample 1 has the shape (0, -3): a dimension is negative"]


def test_a_shallow_verify_checks_the_shapes_of_a_records_ragged_field(tmp_path):
    from mmap_ninja import RecordsMmap

    rows = [{"label": i, "points": np.arange(6, dtype=np.int32).reshape(3, 2)} for i in range(4)]
    RecordsMmap.from_generator(tmp_path / "rec", rows, 2).close()
    assert verify(tmp_path / "rec").ok
    dims = np.fromfile(tmp_path / "rec" / "points.dims.bin", dtype="<i8")
    dims[5] = 7  # sample 2: (3, 7)
    dims.tofile(tmp_path / "rec" / "points.dims.bin")
    problems = verify(tmp_path / "rec").problems
    assert problems == ["points.dims.bin (or points.shape_offsets.bin) is corrupt: sample 2 has the shape (3, 7) of "
                        "21 elements, but its offsets give it 6 elements"], problems


def test_shapes_whose_product_overflows_int64_are_damage(tmp_path):
    RaggedMmap.from_generator(tmp_path / "r", [np.zeros((2, 4), dtype=np.uint8)], 1).close()
    dims = np.fromfile(tmp_path / "r" / "dims.bin", dtype="<i8")
    dims[:] = [2**61 + 1, 8]  # the int64 product wraps around to 8, the sample's element count
    dims.tofile(tmp_path / "r" / "dims.bin")
    problems = verify(tmp_path / "r").problems
    assert len(problems) == 1 and "sample 0 has the shape (2305843009213693953, 8)" in problems[0], problems


def test_the_shape_check_names_samples_of_the_whole_map_across_its_chunks(tmp_path, monkeypatch):
    import mmap_ninja.kinds.ragged_layout as ragged_layout

    monkeypatch.setattr(ragged_layout, "_CHECK_CHUNK", 3)  # a map of 10 samples checked in 4 chunks
    samples = [np.zeros((i % 3, 2), dtype=np.int8) if i % 2 else np.zeros(i, dtype=np.int8) for i in range(10)]
    RaggedMmap.from_generator(tmp_path / "r", samples, 4).close()
    assert verify(tmp_path / "r").ok
    dims = np.fromfile(tmp_path / "r" / "dims.bin", dtype="<i8")
    shape_offsets = np.fromfile(tmp_path / "r" / "shape_offsets.bin", dtype="<i8")
    dims[shape_offsets[[4, 7]]] += 1  # sample 4: (5,) for 4 elements; sample 7: (2, 2) for 2
    dims.tofile(tmp_path / "r" / "dims.bin")
    problems = verify(tmp_path / "r").problems
    assert [p.split(": ", 1)[1] for p in problems] == [
        "sample 4 has the shape (5,) of 5 elements, but its offsets give it 4 elements",
        "sample 7 has the shape (2, 2) of 4 elements, but its offsets give it 2 elements"], problems


def test_a_shallow_verify_checks_an_images_maps_shapes_and_format_codes(tmp_path):
    from mmap_ninja.kinds.images import ImagesMmap

    pixels = [np.full((4 + i, 5, 3), i, dtype=np.uint8) for i in range(3)]
    ImagesMmap.from_generator(tmp_path / "im", pixels).close()
    assert verify(tmp_path / "im").ok
    shapes = np.fromfile(tmp_path / "im" / "shapes.bin", dtype="<i8")
    damaged = shapes.copy()
    damaged[3 * 1 + 2] = 7  # image 1: 7 channels
    damaged.tofile(tmp_path / "im" / "shapes.bin")
    assert verify(tmp_path / "im").problems == [
        "shapes.bin is corrupt: image 1 has the decoded shape (5, 5, 7); an image is (H, W, C) with H, W >= 1 and "
        "C in 1..4"]
    shapes.tofile(tmp_path / "im" / "shapes.bin")
    (tmp_path / "im" / "formats.bin").write_bytes(bytes([0, 0, 9]))
    assert verify(tmp_path / "im").problems == [
        "formats.bin is corrupt: image 2 has the format code 9, but the header names 1 formats"]
