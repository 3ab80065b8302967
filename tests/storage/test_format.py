"""The on-disk format (FORMAT.md): header, versions, damage detection, 64-bit offsets, the uncommitted tail."""

import json
import os

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, FormatVersionError, NotAMapError, RaggedMmap, StringsMmap, open_existing
from mmap_ninja.storage.store import FORMAT_VERSION

from tests.support import build, equal, peak_bytes_in_a_fresh_process, sample_for, snapshot, write_header


def edit_header(path, **changes):
    header = json.loads((path / "header.json").read_text())
    header.update(changes)
    write_header(path, header)
    return header


def test_header_describes_the_map(tmp_path):
    RaggedMmap.from_lists(tmp_path / "m", [np.zeros((2, 3), ">f4"), np.zeros(4, ">f4")]).close()
    header = json.loads((tmp_path / "m" / "header.json").read_text())
    assert header["format"] == "mmap_ninja" and header["version"] == list(FORMAT_VERSION) == [2, 0]
    assert header["kind"] == "ragged" and header["attrs"] == {"dtype": ">f4", "ndims": [1, 2]}
    assert header["requires"] == [] and header["metadata"] == {} and "building" not in header
    assert isinstance(header["id"], str) and len(header["id"]) >= 16
    assert type(header["commit"]) is int and header["commit"] >= 1
    assert header["columns"]["offsets"] == {"dtype": "<i8", "length": 3}
    assert header["columns"]["data"]["length"] == 40  # bytes
    offsets = np.fromfile(tmp_path / "m" / "offsets.bin", dtype="<i8")
    assert offsets.tolist() == [0, 6, 10]  # in elements, as Arrow's large-list offsets


def test_newer_major_version_is_refused_newer_minor_is_read(kind, tmp_path):
    build(kind, tmp_path / "m", 3).close()
    edit_header(tmp_path / "m", version=[FORMAT_VERSION[0], FORMAT_VERSION[1] + 3])
    assert equal(open_existing(tmp_path / "m")[2], sample_for(kind, 2))
    edit_header(tmp_path / "m", version=[FORMAT_VERSION[0] + 1, 0])
    with pytest.raises(FormatVersionError, match=f"format version {FORMAT_VERSION[0] + 1}.0, newer"):
        open_existing(tmp_path / "m")


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "header.json").write_bytes(b"{not json"), "header.json is not valid JSON"),
    (lambda p: (p / "header.json").write_bytes(b'{"format": "other"}'), "not a mmap_ninja header"),
    (lambda p: edit_header(p, version="1"), "no valid format version"),
    (lambda p: edit_header(p, columns={"offsets": {"dtype": "<i8"}}),
     "header.json: column 'offsets' needs a 'dtype' and a 'length'"),
    (lambda p: os.truncate(p / "data.bin", os.path.getsize(p / "data.bin") - 1), "data.bin is truncated"),
    (lambda p: os.truncate(p / "offsets.bin", 8), "offsets.bin is truncated"),
    (lambda p: os.remove(p / "offsets.bin"), "offsets.bin is missing"),
])
def test_damage_is_reported_with_the_file_name(tmp_path, damage, message):
    StringsMmap.from_strings(tmp_path / "m", ["abc", "de"]).close()
    damage(tmp_path / "m")
    with pytest.raises(CorruptMapError, match=message):
        StringsMmap(tmp_path / "m")


def test_missing_header_is_not_a_map(tmp_path):
    StringsMmap.from_strings(tmp_path / "m", ["abc"]).close()
    os.remove(tmp_path / "m" / "header.json")
    for opening in (lambda: StringsMmap(tmp_path / "m", mode="r"), lambda: open_existing(tmp_path / "m")):
        with pytest.raises(NotAMapError, match=r"header\.json is missing"):
            opening()
    # the default mode opens an empty map there, but its first write never takes the leftover files for its own
    with pytest.raises(FileExistsError, match=r"data\.bin"):
        StringsMmap(tmp_path / "m").append("x")


def test_uncommitted_tail_is_ignored_by_readers_and_cut_by_the_next_writer(kind, tmp_path):
    build(kind, tmp_path / "m", 5).close()
    committed = snapshot(tmp_path / "m")
    for name in ("data.bin", "offsets.bin"):  # what a writer killed between write and publish leaves
        if (tmp_path / "m" / name).exists():
            with open(tmp_path / "m" / name, "ab") as f:
                f.write(b"\xff" * 24)
    damaged = snapshot(tmp_path / "m")
    reader = open_existing(tmp_path / "m")
    assert len(reader) == 5 and all(equal(reader[i], sample_for(kind, i)) for i in range(5))
    writer = open_existing(tmp_path / "m", mode="r+")
    assert snapshot(tmp_path / "m") == damaged  # opening, even to write, changes nothing
    with writer.transaction():  # a write's transaction cuts the tail before it appends
        assert snapshot(tmp_path / "m") == {**committed, ".lock": b""}
        writer.append(sample_for(kind, 5))
    writer.close()
    after = snapshot(tmp_path / "m")
    for name in ("data.bin", "offsets.bin"):
        if name in committed:
            assert after[name].startswith(committed[name]) and b"\xff" * 24 not in after[name]
    assert [equal(open_existing(tmp_path / "m")[i], sample_for(kind, i)) for i in range(6)] == [True] * 6


def _commit_by_hand(path, **lengths):
    header = json.loads((path / "header.json").read_text())
    for name, length in lengths.items():
        header["columns"][name]["length"] = length
    write_header(path, header)


def test_byte_offsets_past_4_gib(tmp_path):
    """A sparse 5 GiB first string: offsets, reads and extends past 2**32 bytes."""
    big = 5 << 30
    StringsMmap.from_strings(tmp_path / "m", []).close()
    path = tmp_path / "m"
    with open(path / "data.bin", "r+b") as f:
        f.seek(big)
        f.write("héllo".encode())
    np.array([0, big, big + 6], dtype="<i8").tofile(path / "offsets.bin")
    _commit_by_hand(path, data=big + 6, offsets=3)
    m = StringsMmap(path, mode="r+")
    assert len(m) == 2 and m[1] == "héllo" and int(m.offsets[1]) == big
    m.extend(["wörld", ""])
    assert m[-2:] == ["wörld", ""] and int(m.offsets[-1]) == big + 12
    m.close()
    assert StringsMmap(path)[1:] == ["héllo", "wörld", ""]


def test_more_than_2_to_the_31_items(tmp_path):
    """2**31 + 1 empty strings (a sparse 16 GiB offsets file): counts and extends are 64-bit."""
    n = (1 << 31) + 1
    StringsMmap.from_strings(tmp_path / "m", []).close()
    os.truncate(tmp_path / "m" / "offsets.bin", (n + 1) * 8)
    _commit_by_hand(tmp_path / "m", offsets=n + 1)
    m = StringsMmap(tmp_path / "m", mode="r+")
    assert len(m) == n and m[-1] == "" and m[n - 5:n - 3] == ["", ""]
    m.append("last")
    assert len(m) == n + 1 and m[n] == "last" and m[-2] == ""


def test_opening_allocates_nothing_per_sample(tmp_path):
    StringsMmap.from_strings(tmp_path / "m", ["x"] * 1_000_000).close()
    RaggedMmap.from_lists(tmp_path / "r", [np.zeros(1, np.uint8)] * 200_000).close()
    for cls, path in ((StringsMmap, tmp_path / "m"), (RaggedMmap, tmp_path / "r")):
        peak = peak_bytes_in_a_fresh_process(f"from mmap_ninja import {cls.__name__} as cls\npath = {str(path)!r}",
                                             "m = cls(path)\nm[len(m) - 1]")
        assert peak < 64 * 1024, f"opening {cls.__name__} allocated {peak} bytes"


def test_refresh_after_the_map_was_replaced_reads_the_new_files(tmp_path):
    StringsMmap.from_strings(tmp_path / "m", ["old", "map"]).close()
    reader = StringsMmap(tmp_path / "m")
    assert reader[:] == ["old", "map"]
    StringsMmap.from_strings(tmp_path / "m", ["new", "one"], overwrite=True).close()  # same lengths
    assert reader[:] == ["old", "map"]  # a snapshot until refresh
    reader.refresh()
    assert reader[:] == ["new", "one"]
