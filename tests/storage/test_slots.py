"""Maps kept with ``commit="slots"`` (FORMAT.md, "A commit that never renames over a file a reader holds"): the
header in two checksummed slots written in place, a stub ``header.json`` older readers refuse, no file cut or
renamed by a commit, and deletions deferred while a reader holds the files."""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import (
    ImagesMmap,
    MapInUseError,
    RaggedMmap,
    RecordsMmap,
    StringsMmap,
    merge,
    open_existing,
    upload,
    verify,
)
from mmap_ninja.errors import CorruptMapError, UnknownFeatureError
from mmap_ninja.storage import format as format_module
from mmap_ninja.storage.format import read_header
from mmap_ninja.storage.header_slots import SLOT_SIZE, STUB
from mmap_ninja.testing import specs

SPECS = {spec.name: spec for spec in specs()}


def build(name: str, path: Path, n: int, **options: Any) -> Any:
    spec = SPECS[name]
    return spec.container.from_generator(path, spec.samples(0, n), 4, **{**spec.build_options, **options})


def slot_sequences(path: Path) -> list[int]:
    raw = (path / "header.slots").read_bytes()
    return [struct.unpack_from("<Q", raw, k * SLOT_SIZE)[0] if len(raw) > k * SLOT_SIZE else 0 for k in (0, 1)]


# ---------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_kind_round_trips_with_slots(tmp_path: Path, name: str) -> None:
    spec = SPECS[name]
    path = tmp_path / "m"
    with build(name, path, 9, commit="slots") as m:
        m.extend(spec.samples(9, 12))
    assert (path / "header.json").read_bytes() == STUB
    header = read_header(path)
    assert "commit.slots" in header.requires and not header.building
    for opened in (spec.container(path), spec.container(path, mode="r"), open_existing(path)):
        with opened as m:
            assert len(m) == 12
            assert all(spec.equal(m[i], spec.make_sample(i)) for i in range(12))
    report = verify(path, deep=True)
    assert report.ok, report.problems
    from mmap_ninja.tools.cli import main

    assert main(["info", str(path)]) == 0


def test_stub_is_refused_by_a_reader_that_does_not_know_slots(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    build("strings", tmp_path / "m", 5, commit="slots").close()
    monkeypatch.setattr(format_module, "_FEATURES", format_module._FEATURES - {"commit.slots"})
    with pytest.raises(UnknownFeatureError, match=r"commit\.slots"):
        StringsMmap(tmp_path / "m")
    stub = json.loads(STUB)  # what an older reader parses: no columns, nothing it could misread
    assert stub["requires"] == ["commit.slots"] and stub["columns"] == {}


def test_a_plain_map_keeps_the_rename_protocol(tmp_path: Path) -> None:
    path = tmp_path / "m"
    with build("ragged", path, 5, commit="rename") as m:
        m.extend(SPECS["ragged"].samples(5, 8))
    assert not (path / "header.slots").exists()
    assert json.loads((path / "header.json").read_bytes())["columns"]["offsets"]["length"] == 9
    assert "commit.slots" not in read_header(path).requires


def test_the_environment_chooses_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAP_NINJA_COMMIT", "slots")
    m = StringsMmap(tmp_path / "incremental")  # created by its first write
    m.append("a")
    m.close()
    assert "commit.slots" in read_header(tmp_path / "incremental").requires
    build("strings", tmp_path / "plain", 2, commit="rename").close()  # the option wins over the environment
    assert not (tmp_path / "plain" / "header.slots").exists()
    monkeypatch.setenv("MMAP_NINJA_COMMIT", "swap")
    with pytest.raises(ValueError, match=r"MMAP_NINJA_COMMIT must be 'slots' .* got 'swap'"):
        build("strings", tmp_path / "bad", 2)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match=r"commit= must be 'slots'"):
        build("strings", tmp_path / "bad", 2, commit="fast")


def test_overwrite_keeps_a_slot_map_a_slot_map(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("strings", path, 3, commit="slots").close()
    build("strings", path, 2, overwrite=True).close()
    assert "commit.slots" in read_header(path).requires
    build("strings", path, 4, overwrite=True, commit="rename").close()
    assert "commit.slots" not in read_header(path).requires and not (path / "header.slots").exists()
    with StringsMmap(path) as m:
        assert len(m) == 4
    build("strings", path, 1, overwrite=True, commit="slots").close()  # a plain map replaced by a slot map
    assert (path / "header.json").read_bytes() == STUB and len(StringsMmap(path, mode="r")) == 1


def test_sharded_and_records_fields_read_slot_maps(tmp_path: Path) -> None:
    for k in range(2):
        build("records", tmp_path / f"day{k}", 3 + k, commit="slots").close()
    days = merge(tmp_path / "days", [tmp_path / "day0", tmp_path / "day1"])
    assert len(days) == 7
    assert verify(tmp_path / "days", deep=True).ok
    with RecordsMmap(days.path / "shards" / "shard-000001") as shard:
        assert len(shard["text"]) == 4
    days.close()


def test_upload_publishes_a_slot_map_as_a_plain_one(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    build("ragged", tmp_path / "m", 6, commit="slots").close()
    upload(tmp_path / "m", "memory://slots-test/m")
    with open_existing("memory://slots-test/m", cache_dir=tmp_path / "cache") as remote:
        assert len(remote) == 6
        assert SPECS["ragged"].equal(remote[5], SPECS["ragged"].make_sample(5))


# ---------------------------------------------------------------------------------------------- torn slots

def test_a_torn_newer_slot_falls_back_to_the_older_commit(tmp_path: Path) -> None:
    path = tmp_path / "m"
    with build("strings", path, 4, commit="slots") as m:
        m.extend(["four", "five"])
        before = read_header(path).commit
        m.append("six")
    sequences = slot_sequences(path)
    newer = 0 if sequences[0] > sequences[1] else 1
    raw = bytearray((path / "header.slots").read_bytes())
    raw[newer * SLOT_SIZE + 40] ^= 0xFF  # a byte inside the newer slot's JSON: as a write torn by a crash
    (path / "header.slots").write_bytes(bytes(raw))
    header = read_header(path)
    assert header.commit == before
    with StringsMmap(path) as reopened:
        assert len(reopened) == 6 and reopened[5] == "five"
        reopened.append("again")  # the next writer writes into the damaged slot, never over the good one
    assert read_header(path).commit == before + 1
    with StringsMmap(path, mode="r") as again:
        assert list(again)[-2:] == ["five", "again"]


def test_both_slots_damaged_is_a_corrupt_map_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m"
    with build("strings", path, 4, commit="slots") as m:
        m.append("x")
    raw = bytearray((path / "header.slots").read_bytes())
    for k in (0, 1):
        raw[k * SLOT_SIZE + 20] ^= 0x01
    (path / "header.slots").write_bytes(bytes(raw))
    with pytest.raises(CorruptMapError, match=r"header\.slots is corrupt: neither of its two header slots"):
        StringsMmap(path)
    assert not verify(path).ok


def test_a_slot_holds_sequence_length_header_and_crc(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("numpy", path, 3, commit="slots").close()
    raw = (path / "header.slots").read_bytes()
    best = max(range(2), key=lambda k: slot_sequences(path)[k])
    sequence, length = struct.unpack_from("<QQ", raw, best * SLOT_SIZE)
    body = raw[best * SLOT_SIZE + 16:best * SLOT_SIZE + 16 + length]
    (crc,) = struct.unpack_from("<I", raw, best * SLOT_SIZE + 16 + length)
    assert crc == zlib.crc32(raw[best * SLOT_SIZE:best * SLOT_SIZE + 16 + length])
    assert json.loads(body)["commit"] == read_header(path).commit and sequence >= 2


# ---------------------------------------------------------------------------------------------- no renames

@pytest.fixture
def file_operations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every os.replace / os.rename / os.unlink / os.truncate / os.ftruncate call, recorded (and made)."""
    calls: list[tuple[str, str]] = []

    def recording(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(target: Any, *args: Any, **kwargs: Any) -> Any:
            shown = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) and os.path.exists(
                f"/proc/self/fd/{target}") else os.fspath(target)
            result = real(target, *args, **kwargs)
            calls.append((name, shown))  # (made: an unlink of a missing file changes nothing)
            return result
        return wrapper

    for name in ("replace", "rename", "unlink", "truncate", "ftruncate"):
        monkeypatch.setattr(os, name, recording(name, getattr(os, name)))
    yield calls


@pytest.mark.parametrize("name", ["strings", "ragged", "records"])
def test_a_slots_commit_renames_truncates_and_deletes_nothing(tmp_path: Path, name: str,
                                                              file_operations: list[tuple[str, str]]) -> None:
    spec = SPECS[name]
    path = tmp_path / "m"
    m = build(name, path, 5, commit="slots")
    reader = spec.container(path, mode="r")
    file_operations.clear()
    m.extend(spec.samples(5, 9))
    m.append(spec.make_sample(9))
    with m.transaction():
        m.extend(spec.samples(10, 12))
    with pytest.raises(KeyError), m.transaction():  # a failed write: its tail is left to be overwritten
        m.extend(spec.samples(12, 20))
        raise KeyError("stop")
    with m.transaction():
        m.extend(spec.samples(12, 14))
        with pytest.raises(KeyError), m.transaction():
            m.extend(spec.samples(14, 30))
            raise KeyError("inner")
    if name == "records":
        m.add_field("score", ("scalar", "float32"), 0.5)  # a commit that adds columns
    else:
        m[0] = spec.make_sample(0)  # an in-place write
    assert file_operations == [], file_operations
    reader.refresh()
    want = spec.make_sample(13)
    if name == "records":
        want = {**want, "score": np.float32(0.5)}
    assert len(reader) == 14 and spec.equal(reader[13], want)
    m.close()
    reader.close()


def test_the_recorder_sees_the_rename_protocol(tmp_path: Path, file_operations: list[tuple[str, str]]) -> None:
    m = build("strings", tmp_path / "m", 5, commit="rename")
    file_operations.clear()
    m.append("x")
    assert [op for op, _ in file_operations] == ["replace"]  # the check above would catch a rename
    m.close()


# ---------------------------------------------------------------------------------------------- deferred deletions

def test_overwrite_defers_deleting_files_a_reader_holds(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("strings", path, 5, commit="slots").close()
    reader = StringsMmap(path, mode="r")
    old_data = reader[4]
    with build("strings", path, 2, overwrite=True) as new:
        assert list(new) == SPECS["strings"].samples(0, 2)
    assert (path / "data.bin").exists()  # held by the reader: not deleted, not written over
    assert "data.bin" in (path / ".deferred-deletions").read_text()
    assert reader[4] == old_data and len(reader) == 5
    assert verify(path, deep=True).ok  # the new map's files have their own names, which every reader follows
    from mmap_ninja.tools.cli import main

    assert main(["info", str(path)]) == 0
    with StringsMmap(path) as writer:
        writer.append("while held")  # a writer that cannot take the old generation's lock keeps the files
    assert (path / "data.bin").exists()
    reader.close()
    with StringsMmap(path) as writer:
        writer.append("after")  # now nothing holds them: this writer deletes them
    assert not (path / "data.bin").exists() and (path / ".deferred-deletions").read_text() == ""
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".readers-")) == \
        [f".readers-{read_header(path).id}"]
    with StringsMmap(path, mode="r") as m:
        assert list(m)[-2:] == ["while held", "after"]


def test_an_overwrite_sweeps_the_deferred_files_of_earlier_generations(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("strings", path, 5, commit="slots").close()
    reader = StringsMmap(path, mode="r")
    build("strings", path, 2, overwrite=True).close()  # the first generation's files wait for the reader
    assert (path / "data.bin").exists()
    reader.close()
    with build("strings", path, 3, overwrite=True) as newest:  # nothing holds them now: this overwrite sweeps them
        assert list(newest) == SPECS["strings"].samples(0, 3)
    header = read_header(path)
    live = {header.file_of(name) for name in header.columns}
    assert sorted(p.name for p in path.iterdir() if p.name.endswith(".bin")) == sorted(live)
    assert (path / ".deferred-deletions").read_text() == ""
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".readers-")) == [f".readers-{header.id}"]
    assert verify(path, deep=True).ok


def test_overwrite_without_readers_deletes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("ragged", path, 5, commit="slots").close()
    build("ragged", path, 2, overwrite=True).close()
    names = sorted(p.name for p in path.iterdir())
    assert "data.bin" in names and not any(n.count(".") > 1 for n in names if n.endswith(".bin"))
    assert not (path / ".deferred-deletions").exists()


def test_a_reader_that_cannot_create_its_lock_still_reads(tmp_path: Path) -> None:
    # The fallback itself (root ignores folder permissions, so a lock file that can be neither made nor opened
    # stands in for read-only media): a link into a folder that does not exist.
    path = tmp_path / "m"
    build("strings", path, 3, commit="slots").close()
    header = read_header(path)
    lock = path / f".readers-{header.id}"
    lock.unlink()
    lock.symlink_to(tmp_path / "no-such-folder" / "lock")
    with StringsMmap(path, mode="r") as m:
        assert list(m) == SPECS["strings"].samples(0, 3)
        assert m._store._reader_lock is not None and m._store._reader_lock.fd is None  # read without a lock


def test_builders_without_a_commit_keyword_follow_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAP_NINJA_COMMIT", "slots")
    arr = np.arange(24, dtype=np.int16).reshape(4, 6)
    with mmap_ninja.kinds.numpy.from_ndarray(tmp_path / "n", arr) as m:
        m.extend(arr[:2])
    with RaggedMmap.from_lists(tmp_path / "r", [np.arange(3)]) as m:
        m.append(np.arange(2))
    with StringsMmap.from_strings(tmp_path / "s", ["a", "b"]) as m:
        m.append("c")
    for name, length in (("n", 6), ("r", 2), ("s", 3)):
        assert "commit.slots" in read_header(tmp_path / name).requires
        with open_existing(tmp_path / name) as opened:
            assert len(opened) == length
    with ImagesMmap.from_generator(tmp_path / "i", SPECS["images"].samples(0, 3), 2) as images:
        images.append(SPECS["images"].make_sample(3))
    assert len(ImagesMmap(tmp_path / "i", mode="r")) == 4
    assert issubclass(MapInUseError, mmap_ninja.MapLockedError)


def test_a_durable_slots_commit_fsyncs_the_data_then_the_slot(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m"
    m = build("strings", path, 3, commit="slots", durable=True)
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    m.append("durable")
    assert synced[-1] == "header.slots" and {"data.bin", "offsets.bin"} <= set(synced[:-1]), synced
    m.close()


_HOLDER = """
import sys
from mmap_ninja import StringsMmap
m = StringsMmap(sys.argv[1], mode="r")
print(m[len(m) - 1], flush=True)
sys.stdin.readline()
"""


def test_a_reader_in_another_process_keeps_the_replaced_files_until_it_closes(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "m"
    build("strings", path, 5, commit="slots").close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == SPECS["strings"].make_sample(4)  # it maps the map now
        build("strings", path, 2, overwrite=True).close()
        with StringsMmap(path) as writer:
            writer.append("x")
        assert (path / "data.bin").exists(), "a file another process maps was deleted"
        holder.stdin.write("done\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with StringsMmap(path) as writer:
        writer.append("y")
    assert not (path / "data.bin").exists()
    assert list(StringsMmap(path, mode="r")) == [*SPECS["strings"].samples(0, 2), "x", "y"]


def test_a_slot_map_folder_copied_to_a_url_is_refused_never_misread(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    build("strings", tmp_path / "m", 3, commit="slots").close()
    memory = fsspec.filesystem("memory")
    for file in (tmp_path / "m").iterdir():
        memory.pipe(f"/slots-test/raw/{file.name}", file.read_bytes())
    with pytest.raises(CorruptMapError, match=r"stub of a map kept with 'commit\.slots'"):
        open_existing("memory://slots-test/raw", cache_dir=tmp_path / "cache")


def test_a_hostile_deletion_journal_deletes_nothing_outside_the_map_nor_its_live_files(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build("strings", path, 3, commit="slots").close()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    live = read_header(path).id
    (path / ".deferred-deletions").write_text(
        f"0123abcd ../precious.txt\n../.. precious.txt\n0123abcd data.bin\n{live} offsets.bin\n"
        f"0123abcd header.slots\n0123abcd header.json\n0123abcd .lock\n")
    with StringsMmap(path) as m:
        m.append("x")
    assert outside.read_text() == "keep me"
    for name in ("data.bin", "offsets.bin", "header.slots", "header.json", ".lock"):
        assert (path / name).exists(), name
    assert list(StringsMmap(path, mode="r")) == [*SPECS["strings"].samples(0, 3), "x"]


def test_new_maps_are_slot_maps_by_default_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmap_ninja.storage import header_slots

    monkeypatch.delenv("MMAP_NINJA_COMMIT", raising=False)
    monkeypatch.setattr(header_slots.sys, "platform", "win32")
    assert header_slots.choose_protocol(None) == "slots"
    assert header_slots.choose_protocol("rename") == "rename"
    monkeypatch.setattr(header_slots.sys, "platform", "linux")
    assert header_slots.choose_protocol(None) == "rename"
    assert header_slots.choose_protocol(None, existing_slots=True) == "slots"  # a replaced slot map stays one
