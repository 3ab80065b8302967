"""The write path of issue 21: samples' own buffers go to bounded vectored writes and to the hasher, with no
joining copy, and the bytes on disk (data, offsets, checksum records) are exactly those of the joined samples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

import mmap_ninja
from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja.kinds import _batching
from mmap_ninja.kinds.layouts import StringsLayout
from mmap_ninja.kinds.ragged_layout import RaggedLayout
from mmap_ninja.storage import _fsio
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id


def _record_pwritev(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Every vectored write's buffer sizes (the real os.pwritev still does the writing)."""
    calls: list[list[int]] = []
    real = os.pwritev

    def recording(fd: int, buffers: Any, offset: int) -> int:
        calls.append([memoryview(b).nbytes for b in buffers])
        return real(fd, buffers, offset)
    monkeypatch.setattr(os, "pwritev", recording)
    return calls


def _records(path: Path, column: str) -> np.ndarray[Any, Any]:
    records = np.fromfile(path / "checksums.bin", dtype=RECORD_DTYPE)
    return records[records["column"] == column_id(column)]


_EMPTY_RAGGED = {"data": 0, "dims": 0, "offsets": 1, "shape_offsets": 1}


def test_ragged_encode_hands_over_the_samples_own_buffers():
    samples = [np.arange(500, dtype=np.int32), np.arange(300, dtype=np.int32).reshape(100, 3)]
    encoded = RaggedLayout().encode(samples, _EMPTY_RAGGED, {"dtype": "<i4"})
    assert len(encoded.columns["data"]) == 2
    assert all(got is want for got, want in zip(encoded.columns["data"], samples))
    assert _fsio.byte_sizes(encoded.columns["data"]) == [2000, 1200]


def test_strings_encode_hands_over_each_long_document():
    texts = ["a" * 2000, "é" * 1000, ""]
    encoded = StringsLayout().encode(texts, {"data": 0, "offsets": 1}, {})
    assert list(encoded.columns["data"]) == [t.encode() for t in texts]


def test_small_samples_are_joined_into_bounded_pieces(monkeypatch):
    monkeypatch.setattr(_batching, "_PIECE", 100)
    samples = [np.full(n, n, dtype=np.int32) for n in [3, 40, 1, 0, 7] * 10]
    encoded = RaggedLayout().encode(samples, _EMPTY_RAGGED, {"dtype": "<i4"})
    pieces = encoded.columns["data"]
    assert 1 < len(pieces) < len(samples)
    assert all(len(piece) <= 160 for piece in pieces)  # at most one sample past the bound
    assert b"".join(pieces) == b"".join(s.tobytes() for s in samples)
    assert _fsio.byte_sizes(pieces) == [len(piece) for piece in pieces]
    texts = ["ab", "", "cde"] * 30
    assert b"".join(StringsLayout().encode(texts, {"data": 0, "offsets": 1}, {}).columns["data"]) == \
        "".join(texts).encode()


@pytest.mark.parametrize("dtype", ["<i4", ">f8", "M8[s]", "?", "c8"])
def test_ragged_bytes_equal_the_joined_samples(tmp_path, dtype):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 100, size=(40, 6)).astype(dtype)
    samples = [base[k, :k % 7] for k in range(40)]  # contiguous rows of several lengths
    samples += [base[:5, 1:4], base[::2, 0], np.asfortranarray(base[:4, :3]), base[0, 0]]  # strided, 0-d
    m = RaggedMmap.from_lists(tmp_path / "m", samples, batch_size=16, dtype=dtype)
    stored = m.dtype
    m.close()
    joined = b"".join(np.ascontiguousarray(s, dtype=stored).tobytes() for s in samples)  # stored little-endian
    assert (tmp_path / "m" / "data.bin").read_bytes() == joined
    sizes = [np.asarray(s).size for s in samples]
    offsets = np.fromfile(tmp_path / "m" / "offsets.bin", dtype="<i8")
    assert offsets.tolist() == np.concatenate([[0], np.cumsum(sizes)]).tolist()
    # One record per batch, hashing exactly that batch's bytes.
    itemsize = stored.itemsize
    for record in _records(tmp_path / "m", "data"):
        assert record["digest"] == xxhash.xxh3_64_intdigest(joined[record["start"]:record["stop"]])
    assert _records(tmp_path / "m", "data")["stop"].max() == len(joined) == sum(sizes) * itemsize
    mmap_ninja.verify(tmp_path / "m", deep=True)
    reopened = RaggedMmap(tmp_path / "m")
    for got, want in zip(reopened, samples):
        np.testing.assert_array_equal(got, want)


def test_strings_bytes_and_checksums_equal_the_joined_documents(tmp_path):
    texts = ["", "é", "x" * 3000, "short", "ünïcode " * 50] * 7
    StringsMmap.from_strings(tmp_path / "s", texts, batch_size=4).close()
    joined = "".join(texts).encode("utf-8")
    assert (tmp_path / "s" / "data.bin").read_bytes() == joined
    for record in _records(tmp_path / "s", "data"):
        assert record["digest"] == xxhash.xxh3_64_intdigest(joined[record["start"]:record["stop"]])
    assert list(StringsMmap(tmp_path / "s")) == texts


def test_vectored_writes_are_bounded_in_bytes_and_buffers(tmp_path, monkeypatch):
    monkeypatch.setattr(_batching, "_JOIN_MEAN_BELOW", 0)  # every sample its own buffer
    monkeypatch.setattr(_fsio, "_MAX_WRITE", 1000)
    monkeypatch.setattr(_fsio, "_IOV_MAX", 16)
    calls = _record_pwritev(monkeypatch)
    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 255, size=int(n), dtype=np.uint8) for n in rng.integers(0, 300, size=200)]
    samples.insert(50, rng.integers(0, 255, size=5000, dtype=np.uint8))  # larger than one call
    m = RaggedMmap.from_lists(tmp_path / "m", samples, batch_size=128)
    m.close()
    assert calls and all(sum(sizes) <= 1000 and len(sizes) <= 16 for sizes in calls)
    assert (tmp_path / "m" / "data.bin").read_bytes() == b"".join(s.tobytes() for s in samples)
    mmap_ninja.verify(tmp_path / "m", deep=True)


def test_write_all_takes_any_contiguous_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(_fsio, "_MAX_WRITE", 64)
    monkeypatch.setattr(_fsio, "_IOV_MAX", 3)
    buffers: list[Any] = [b"abc", bytearray(b"de"), np.arange(6, dtype=">i4").reshape(2, 3), b"",
                          memoryview(np.arange(40, dtype=np.uint16)), np.zeros((), dtype="f8"), b"z" * 200]
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        written = _fsio.write_all(fd, buffers, 7)
    finally:
        os.close(fd)
    joined = b"".join(memoryview(b).tobytes() for b in buffers)
    assert written == len(joined) == sum(_fsio.byte_sizes(buffers))
    assert (tmp_path / "f").read_bytes() == b"\0" * 7 + joined


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps (Linux)")
def test_opening_a_1d_map_maps_only_its_data_and_offsets(tmp_path):
    samples = [np.arange(n, dtype=np.int32) for n in (3, 0, 5, 1)]
    RaggedMmap.from_lists(tmp_path / "t", samples).close()
    m = RaggedMmap(tmp_path / "t")
    np.testing.assert_array_equal(m[2], samples[2])
    mapped = _mapped_files()
    assert str(tmp_path / "t" / "data.bin") in mapped and str(tmp_path / "t" / "offsets.bin") in mapped
    assert str(tmp_path / "t" / "dims.bin") not in mapped and str(tmp_path / "t" / "shape_offsets.bin") not in mapped
    # A padded batch maps them (it checks the recorded shapes against the offsets).
    padded, lengths = m.get_batch([2, 0, 1], pad_value=0)
    assert lengths.tolist() == [5, 3, 0] and padded.shape == (3, 5)
    assert str(tmp_path / "t" / "dims.bin") in _mapped_files()
    assert [m._view.shape(k) for k in range(4)] == [(3,), (0,), (5,), (1,)]
    m.close()


def test_shapes_of_a_map_with_nd_samples_come_from_its_shape_columns(tmp_path):
    samples = [np.zeros((2, 3), np.int16), np.zeros(4, np.int16), np.zeros((1, 1, 2), np.int16)]
    RaggedMmap.from_lists(tmp_path / "t", samples).close()
    m = RaggedMmap(tmp_path / "t")
    assert [m._view.shape(k) for k in range(3)] == [(2, 3), (4,), (1, 1, 2)]
    assert [x.shape for x in m[[2, 0]]] == [(1, 1, 2), (2, 3)]
    m.close()


@pytest.mark.parametrize("source", [list, tuple, iter])
def test_batches_of_a_list_a_tuple_and_an_iterator_are_the_same_lists(source):
    items = list(range(10))
    got = list(_batching.batches(source(items), 4))
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and all(type(b) is list for b in got)
    assert list(_batching.batches(source([]), 4)) == []


def test_the_first_batch_of_a_new_map_takes_the_first_samples_dtype_without_converting_each():
    samples = [np.arange(5, dtype=np.int16), np.arange(2, dtype=np.int16)]
    encoded = RaggedLayout().encode(samples, _EMPTY_RAGGED, RaggedLayout().attrs())
    assert encoded.attrs is not None and encoded.attrs["dtype"] == "<i2" and encoded.attrs["ndims"] == [1]
    assert _batching.uniform_arrays(samples, None) == np.dtype(np.int16)
    # Not the common batch: a subclass, a list, another dtype, an object dtype, nothing at all.
    for batch in ([np.arange(2).view(np.ma.MaskedArray)], [[1, 2]], [samples[0], np.arange(2, dtype=np.int32)],
                  [np.array([None])], []):
        assert _batching.uniform_arrays(batch, None) is None


def test_a_first_batch_of_mixed_dtypes_is_refused_naming_the_sample(tmp_path):
    samples = [np.arange(3, dtype=np.int16), np.array([1.5])]
    with pytest.raises(ValueError, match="item 1"):
        RaggedMmap.from_lists(tmp_path / "m", samples)
    with pytest.raises(TypeError, match="item 0"):
        RaggedMmap.from_lists(tmp_path / "n", [np.array([None, 1])])


def test_strings_of_a_str_subclass_are_stored_and_bad_ones_named(tmp_path):
    class Text(str):
        pass
    assert _batching.utf8_all([Text("é"), "x"]) == ["é".encode(), b"x"]
    assert _batching.utf8_all(["a", b"b"]) is None and _batching.utf8_all(["\ud800"]) is None
    StringsMmap.from_strings(tmp_path / "s", [Text("é"), "x"]).close()
    assert list(StringsMmap(tmp_path / "s")) == ["é", "x"]
    with pytest.raises(ValueError, match="item 1 cannot be stored as UTF-8"):
        StringsMmap.from_strings(tmp_path / "t", ["ok", "\ud800"])


def test_an_encoded_header_is_the_json_of_its_content_with_the_checksum_last():
    import json

    from mmap_ninja.storage.format import Column, Header, encode_header, header_checksum
    header = Header(kind="ragged", columns={"data": Column(np.dtype("u1"), 5), "checksums": Column(RECORD_DTYPE, 2)},
                    attrs={"x": "é"}, id="abc", metadata={"k": [1, 2.5]}, building=True, checksums="xxh3_64",
                    extra={"later": {"a": 1}})
    encoded = encode_header(header)
    content = json.loads(encoded)
    checksum = content.pop("checksum")
    assert checksum == header_checksum(content) and list(json.loads(encoded))[-1] == "checksum"
    assert json.dumps({**content, "checksum": checksum}).encode() == encoded
    assert encode_header(header) == encoded  # the remembered column descriptions are not changed by encoding


# A header that replaces another waits 0.2-6 ms for the file system on a busy disk: a build writes the one claiming
# its folder, one publishing its initial items (the leading 0 of the offsets: so that an unfinished build always
# reads, verifies and reports as a map of 0 samples), one per batch, and the one finishing it, but from a list none
# of its own for its last batch (published by the last header).
@pytest.mark.parametrize(("source", "batches", "commits"), [("generator", 1, 3), ("generator", 3, 5),
                                                            ("list", 1, 2), ("list", 3, 4)])
def test_a_build_writes_a_header_per_batch_and_one_for_its_initial_items(tmp_path: Path, source: str,
                                                                         batches: int, commits: int) -> None:
    from mmap_ninja.storage.format import read_header

    samples = [np.arange(k % 5, dtype=np.int32) for k in range(4 * batches)]
    RaggedMmap.from_lists(tmp_path / "m", samples if source == "list" else iter(samples), batch_size=4).close()
    header = read_header(tmp_path / "m")
    assert header.commit == commits and not header.building
    assert header.columns["offsets"].length == len(samples) + 1
    with RaggedMmap(tmp_path / "m", verify_reads=True) as m:
        assert [a.tolist() for a in m] == [a.tolist() for a in samples]
    assert mmap_ninja.verify(tmp_path / "m", deep=True).ok


def test_a_build_refused_in_its_first_batch_holds_nothing_verifies_and_is_replaced_by_the_next(tmp_path: Path) -> None:
    from mmap_ninja.errors import UnfinishedMapError
    from mmap_ninja.storage.format import read_header

    path = tmp_path / "m"
    with pytest.raises(ValueError, match="item 1: cannot store dtype float32 as int32"):
        RaggedMmap.from_lists(path, [np.arange(3, dtype=np.int32), np.full(2, 1.5, dtype=np.float32)])
    header = read_header(path)
    assert header.building and header.commit == 1 and header.columns["offsets"].length == 1  # its leading 0
    report = mmap_ninja.verify(path)
    assert report.ok and report.length == 0, report.problems
    with pytest.raises(UnfinishedMapError):
        RaggedMmap(path)
    with RaggedMmap(path, allow_unfinished=True) as m:
        assert len(m) == 0
    RaggedMmap.from_lists(path, [np.arange(3, dtype=np.int32)]).close()
    with RaggedMmap(path) as m:
        assert len(m) == 1 and m[0].tolist() == [0, 1, 2]


def test_a_batch_within_the_piece_bound_is_one_piece_and_a_strided_sample_in_it_goes_as_it_is():
    samples = [np.full(n, n, dtype=np.int32) for n in [3, 40, 1, 0, 7] * 10]
    joined = b"".join(s.tobytes() for s in samples)
    pieces = RaggedLayout().encode(samples, _EMPTY_RAGGED, {"dtype": "<i4", "ndims": []}).columns["data"]
    assert len(pieces) == 1 and bytes(pieces[0]) == joined and _fsio.byte_sizes(pieces) == [len(joined)]
    # A sample with no contiguous buffer in the middle: the samples' own buffers, the writer copies that one.
    mixed = [*samples[:20], np.arange(10, dtype=np.int32)[::2], *samples[20:]]
    pieces = RaggedLayout().encode(mixed, _EMPTY_RAGGED, {"dtype": "<i4", "ndims": []}).columns["data"]
    assert len(pieces) == len(mixed)
    assert _fsio.byte_sizes(pieces) == [4 * s.size for s in mixed]


def test_a_bad_sample_in_the_middle_of_a_batch_is_named_and_changes_nothing(tmp_path: Path) -> None:
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(3, dtype=np.int32)] * 5)
    before = {name: (tmp_path / "m" / f"{name}.bin").read_bytes() for name in ("data", "offsets", "checksums")}
    good = [np.arange(k, dtype=np.int32) for k in range(8)]
    for bad, error, match in [(np.full(2, 1.5), ValueError, "item 9: cannot store dtype float64 as int32"),
                              (np.array(["x"]), TypeError, "item 9: cannot store dtype <U1 as int32"),
                              ("text", TypeError, "item 9"), (None, TypeError, "item 9 is None")]:
        batch = [*good[:4], bad, *good[4:]]
        copy = list(batch)
        with pytest.raises(error, match=match):
            m.extend(batch)
        assert all(a is b for a, b in zip(batch, copy, strict=True))  # the caller's list is left as it was
        assert len(m) == 5
        assert {name: (tmp_path / "m" / f"{name}.bin").read_bytes() for name in before} == before
    m.close()


def test_every_write_call_of_a_build_stays_within_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux 6.18 spent 3x the system time on new page-cache pages written 1 MiB or more per call (see _fsio): a
    joined piece of small samples and a large sample alike go to the kernel at most 256 KiB at a time."""
    calls = _record_pwritev(monkeypatch)
    real_pwrite = os.pwrite

    def recording_pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append([memoryview(data).nbytes])
        return real_pwrite(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", recording_pwrite)
    rng = np.random.default_rng(2)
    small = [rng.integers(0, 1000, size=int(n), dtype=np.int32) for n in rng.integers(1, 64, size=20_000)]
    large = [rng.integers(0, 255, size=700_000, dtype=np.uint8) for _ in range(3)]
    RaggedMmap.from_lists(tmp_path / "tokens", small, batch_size=10_000).close()  # pieces of about 1.3 MB
    RaggedMmap.from_lists(tmp_path / "large", large).close()
    assert calls and max(sum(sizes) for sizes in calls) <= 256 << 10
    assert (tmp_path / "tokens" / "data.bin").read_bytes() == b"".join(s.tobytes() for s in small)
    assert (tmp_path / "large" / "data.bin").read_bytes() == b"".join(s.tobytes() for s in large)
    assert mmap_ninja.verify(tmp_path / "tokens", deep=True).ok and mmap_ninja.verify(tmp_path / "large", deep=True).ok


def test_samples_that_are_not_c_contiguous_are_stored_in_a_batch_of_many(tmp_path):
    """A transposed or strided sample among others (one vectored write) is stored as its C-order copy, and its
    checksum covers the bytes written: a build, an extend and a records field alike."""
    from mmap_ninja import RecordsMmap
    from mmap_ninja.containers.verify import verify

    square = np.arange(20, dtype=np.int64).reshape(4, 5)
    for name, samples in (("transposed", [square.T, square.T, square]), ("strided", [np.arange(10)[::2]] * 3)):
        m = RaggedMmap.from_lists(tmp_path / name, samples)
        m.extend(samples)
        assert [s.tolist() for s in m] == [s.tolist() for s in samples] * 2
        assert verify(tmp_path / name, deep=True).ok
    rows = [{"tokens": np.arange(10, dtype=np.int32)[::2], "label": i} for i in range(3)]
    rec = RecordsMmap.from_dict(tmp_path / "rows", {"tokens": [np.arange(2, dtype=np.int32)], "label": [9]})
    rec.extend(rows)
    assert [r["tokens"].tolist() for r in rec][1:] == [[0, 2, 4, 6, 8]] * 3
    assert verify(tmp_path / "rows", deep=True).ok
