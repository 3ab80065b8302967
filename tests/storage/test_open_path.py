"""Opening a map cheaply without weakening its checks (issue 21): the header's own checksum checked on the bytes
read, structured dtypes parsed once, and each column's size checked once at open and trusted by its mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja.errors import CorruptMapError
from mmap_ninja.storage import format as format_module
from mmap_ninja.storage._paths import _resolved_by_kernel, resolved
from mmap_ninja.storage.format import _descr_from_json, dtype_from_json, header_checksum, read_header


def _strings(path: Path) -> Path:
    StringsMmap.from_strings(path, ["a", "bc", "def"]).close()
    return path


def test_a_header_written_in_another_layout_is_checked_on_its_content(tmp_path):
    path = _strings(tmp_path / "m")
    content = json.loads((path / "header.json").read_text())
    content.pop("checksum")
    content["checksum"] = header_checksum(content)
    (path / "header.json").write_text(json.dumps(content, indent=2))  # not the bytes the writer wrote
    with StringsMmap(path) as m:
        assert m[:] == ["a", "bc", "def"]


def test_a_changed_byte_before_a_well_formed_checksum_is_refused(tmp_path):
    path = _strings(tmp_path / "m")
    raw = (path / "header.json").read_bytes()
    assert raw.endswith(b'"}') and b', "checksum": "crc32:' in raw[-40:]
    damaged = raw.replace(b'"kind": "strings"', b'"kind": "strinks"', 1)
    (path / "header.json").write_bytes(damaged)
    with pytest.raises(CorruptMapError, match="does not match its content"):
        StringsMmap(path)


def test_a_checksum_that_matches_nothing_is_refused(tmp_path):
    path = _strings(tmp_path / "m")
    raw = (path / "header.json").read_bytes()
    (path / "header.json").write_bytes(raw[:-11] + b'00000000"}')
    with pytest.raises(CorruptMapError, match="does not match its content"):
        StringsMmap(path)


@pytest.mark.parametrize("descrs", [
    ([["a", "<i4", [2]]], [["a", "<i4", [2.0]]]),
    ([["a", "<i4", [1]]], [["a", "<i4", [True]]]),
    ([["a", "<i4"], ["b", "<f8"]], [["a", "<i4"], ["b", "<f4"]]),
])
def test_structured_dtypes_are_remembered_by_their_exact_description(descrs):
    for order in (descrs, descrs[::-1]):
        for descr in order:
            try:
                expected = np.lib.format.descr_to_dtype(_descr_from_json(descr))
            except (TypeError, ValueError) as e:
                with pytest.raises(type(e)):
                    dtype_from_json(descr)
            else:
                assert dtype_from_json(descr) == expected
                assert dtype_from_json(descr) == expected  # from the cache


def test_a_dict_in_a_dtype_description_is_a_bad_dtype(tmp_path):
    path = _strings(tmp_path / "m")
    content = json.loads((path / "header.json").read_text())
    content.pop("checksum")
    content["columns"]["checksums"]["dtype"] = [["column", {"x": 1}]]
    content["checksum"] = header_checksum(content)
    (path / "header.json").write_text(json.dumps(content))
    with pytest.raises(CorruptMapError, match="bad dtype"):
        StringsMmap(path)


def test_a_column_opened_again_by_its_path_has_its_size_checked_again(tmp_path):
    # A released column (a shard's) is opened again by its path when first mapped: that may be a new file, whose
    # size must be checked, not the old file's size taken for it (a mapping past its end would crash the reader).
    path = tmp_path / "m"
    RaggedMmap.from_lists(path, [np.arange(k % 7 + 1) for k in range(1000)]).close()
    m = RaggedMmap(path, mode="r")
    m.release_files()
    RaggedMmap.from_lists(path, [np.arange(3)], overwrite=True).close()
    with pytest.raises(CorruptMapError, match="is truncated"):
        m.get_batch(list(range(990, 1000)))  # maps the shape columns for the first time
    m.close()


def test_a_column_that_grew_is_mapped_at_its_new_size(tmp_path):
    path = tmp_path / "m"
    RaggedMmap.from_lists(path, [np.arange(3)]).close()
    reader = RaggedMmap(path, mode="r")
    with RaggedMmap(path) as writer:
        writer.extend([np.arange(k + 10) for k in range(2000)])
    reader.refresh()
    assert len(reader) == 2001 and reader[-1].tolist() == list(range(2009))
    reader.close()


def test_a_column_mapped_after_a_writer_cut_its_tail_is_mapped_to_what_is_committed(tmp_path):
    # The open checked dims.bin with the tail a killed writer left; the next writer cuts that tail before this
    # reader first maps the column (a 1-D map maps its shape columns on first use): mapping the size seen at open
    # would reach past the end of the file.
    path = tmp_path / "m"
    RaggedMmap.from_lists(path, [np.arange(k + 1) for k in range(50)]).close()
    with open(path / "dims.bin", "ab") as dims:
        dims.write(b"\0" * 4096)  # an uncommitted tail
    reader = RaggedMmap(path, mode="r")
    writer = RaggedMmap(path)
    with pytest.raises(RuntimeError, match="no write"), writer.transaction():  # catching up cuts the tail
        raise RuntimeError("no write")
    writer.close()
    assert (path / "dims.bin").stat().st_size == 50 * 8
    padded, lengths = reader.get_batch([49, 0], pad_value=-1)
    assert lengths.tolist() == [50, 1] and padded.shape == (2, 50)
    reader.close()


def test_a_header_read_again_is_not_checked_again_but_every_open_gets_values_of_its_own(tmp_path):
    path = _strings(tmp_path / "m")
    raw = (path / "header.json").read_bytes()
    first = read_header(path)
    assert format_module._CHECKED.get(raw) is not None  # the bytes were checked once and remembered
    second = read_header(path)
    assert second == first
    assert second.attrs is not first.attrs and second.metadata is not first.metadata
    assert second.columns is not first.columns and second.extra is not first.extra
    second.metadata["changed"] = True  # what one handle does to its header's values stays its own
    assert "changed" not in read_header(path).metadata


def test_bytes_of_a_header_that_was_refused_are_refused_again(tmp_path):
    path = _strings(tmp_path / "m")
    raw = (path / "header.json").read_bytes()
    damaged = raw.replace(b'"kind": "strings"', b'"kind": "strinks"', 1)
    (path / "header.json").write_bytes(damaged)
    for _ in range(2):
        with pytest.raises(CorruptMapError, match="does not match its content"):
            read_header(path)
    assert damaged not in format_module._CHECKED
    (path / "header.json").write_bytes(raw)
    with StringsMmap(path) as m:
        assert m[:] == ["a", "bc", "def"]


def test_the_headers_remembered_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(format_module, "_CHECKED", {})
    monkeypatch.setattr(format_module, "_CHECKED_ENTRIES", 2)
    for i in range(5):
        _strings(tmp_path / f"m{i}")
        read_header(tmp_path / f"m{i}")
        assert len(format_module._CHECKED) <= 2


@pytest.mark.skipif(not hasattr(os, "O_PATH") or not os.path.isdir("/proc/self/fd"),
                    reason="the kernel's name of a folder is read from /proc/self/fd (Linux)")
def test_the_kernel_names_an_existing_folder_as_realpath_does(tmp_path):
    real = tmp_path / "disk" / "maps"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    through = tmp_path / "link" / "maps"
    assert _resolved_by_kernel(str(real)) == os.path.realpath(real)
    assert _resolved_by_kernel(str(through)) == os.path.realpath(through) == str(real)
    assert _resolved_by_kernel(str(tmp_path / "missing")) is None  # realpath answers for a folder not made yet
    (tmp_path / "file").write_text("x")
    assert _resolved_by_kernel(str(tmp_path / "file")) is None


@pytest.mark.parametrize("name", ["plain", "link/maps", "link/missing/deeper", "file", "linked-file", "dangling"])
def test_a_root_is_resolved_as_realpath_resolves_it(tmp_path, monkeypatch, name):
    (tmp_path / "disk" / "maps").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    (tmp_path / "file").write_text("x")
    (tmp_path / "linked-file").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    expected = Path(os.path.realpath(tmp_path / name))
    assert resolved(tmp_path / name) == expected
    assert resolved(str(tmp_path / name)) == expected
    monkeypatch.chdir(tmp_path)
    assert resolved(name) == expected
