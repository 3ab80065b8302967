"""Finer-grained checksum records (FORMAT.md, "Finer-grained checksum records"): a write's records are split at
sample boundaries near the map's ``checksums.granularity``, which the header records; older readers and ``verify``
read such maps unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap, np_from_ndarray, verify
from mmap_ninja.storage import _granularity
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id


def _records(path, column):
    records = np.fromfile(path / "checksums.bin", dtype=RECORD_DTYPE)
    mine = records[records["column"] == column_id(column)]
    return [(int(a), int(b)) for a, b in sorted(zip(mine["start"], mine["stop"]))]


@pytest.fixture
def small_granularity(monkeypatch):
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 1000)


def test_new_maps_record_the_default_granularity(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["a", "b"]).close()
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    assert header["checksums"]["granularity"] == _granularity.DEFAULT_GRANULARITY
    assert 4 << 20 <= _granularity.DEFAULT_GRANULARITY <= 16 << 20


def test_records_are_cut_at_sample_boundaries_near_the_granularity(tmp_path, small_granularity):
    samples = [np.arange(n, dtype=np.int32) for n in range(100)]
    RaggedMmap.from_lists(tmp_path / "r", samples, batch_size=100).close()
    ranges = _records(tmp_path / "r", "data")
    assert len(ranges) > 10
    boundaries = {0, *np.cumsum([s.nbytes for s in samples]).tolist()}
    assert all(a in boundaries and b in boundaries for a, b in ranges)  # at sample boundaries only
    assert all(b - a <= 1000 + 99 * 4 for a, b in ranges)  # each near the granularity
    assert [a for a, _ in ranges[1:]] == [b for _, b in ranges[:-1]]  # they tile the column
    assert verify(tmp_path / "r", deep=True).ok
    with open(tmp_path / "r" / "data.bin", "r+b") as f:  # damage is found in the record holding it
        f.seek(5000)
        f.write(b"\xff")
    report = verify(tmp_path / "r", deep=True)
    assert not report.ok and any("data.bin" in p for p in report.problems)


def test_fixed_size_samples_are_cut_between_rows(tmp_path, small_granularity):
    np_from_ndarray(tmp_path / "n", np.arange(3000, dtype=np.int64).reshape(300, 10)).close()
    ranges = _records(tmp_path / "n", "data")
    assert len(ranges) > 1 and all(a % 80 == 0 for a, _ in ranges)
    assert verify(tmp_path / "n", deep=True).ok


def test_a_write_below_the_granularity_keeps_one_record(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["abc"] * 10)
    m.extend(["de"] * 5)
    assert _records(tmp_path / "s", "data") == [(0, 30), (30, 40)]


def test_a_header_with_a_bad_granularity_is_refused(tmp_path):
    from mmap_ninja.errors import CorruptMapError
    from mmap_ninja.storage.format import parse_header

    StringsMmap.from_strings(tmp_path / "s", ["a"]).close()
    content = json.loads((tmp_path / "s" / "header.json").read_text())
    content.pop("checksum")
    content["checksums"]["granularity"] = -1
    with pytest.raises(CorruptMapError, match="granularity"):
        parse_header(content, tmp_path / "s" / "header.json")


def test_records_start_at_the_first_sample_at_or_after_every_multiple_of_the_granularity(tmp_path,
                                                                                        small_granularity):
    # Many small writes (no write is larger than the granularity): a block of a multiple of it starts where a
    # record does, so a block reader fetches no record beyond its block's samples.
    samples = [np.arange(n % 50 + 10, dtype=np.int32) for n in range(400)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples[:1], batch_size=1)
    for k in range(1, 400, 3):
        m.extend(samples[k:k + 3])
    m.close()
    starts = {a for a, _ in _records(tmp_path / "r", "data")}
    boundaries = np.cumsum([0, *[s.nbytes for s in samples]])
    for multiple in range(1000, int(boundaries[-1]), 1000):
        first_sample_start = int(boundaries[np.searchsorted(boundaries, multiple)])
        assert first_sample_start in starts or first_sample_start == boundaries[-1], multiple
    assert verify(tmp_path / "r", deep=True).ok


def test_records_over_many_buffers_hash_exactly_their_bytes():
    """A write of many buffers of any sizes (empty ones, arrays of several dimensions) cut into records: each record
    hashes exactly its bytes, whichever buffers it starts and ends in and however many lie between."""
    import xxhash

    rng = np.random.default_rng(5)
    buffers: list = []
    for k in range(400):
        size = int(rng.integers(0, 300))
        if k % 7 == 0:
            buffers.append(rng.integers(0, 256, size=(size // 3, 3), dtype=np.uint8))  # a 2-D sample's bytes
        else:
            buffers.append(rng.integers(0, 256, size=size, dtype=np.uint8).tobytes())
    sizes = [memoryview(b).nbytes for b in buffers]
    joined = b"".join(bytes(memoryview(b)) for b in buffers)
    offsets = np.cumsum(sizes, dtype=np.int64)
    start = 1_000
    new_items = {"data": buffers, "offsets": [offsets + start]}
    records = _granularity.checksum_records("data", start, buffers, sizes, 1, lambda parts: xxhash.xxh3_64_intdigest(
        b"".join(bytes(memoryview(p)) for p in parts)), 4_096, new_items, {})
    assert len(records) > 10
    assert records[0][2] == start and records[-1][3] == start + len(joined)
    for (_, _, low, high, digest), (_, _, next_low, _, _) in zip(records, [*records[1:], (0, 0, start + len(joined),
                                                                                        0, 0)]):
        assert high == next_low  # they tile the write
        assert digest == xxhash.xxh3_64_intdigest(joined[low - start:high - start])
