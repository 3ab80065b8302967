"""The commit protocol that never renames over, truncates or deletes a file a reader may hold (``commit.slots``).

FORMAT.md, "A commit that never renames over a file a reader holds", specifies it; this module holds its file
operations, and `format.read_header` and `storage.Store` call them (nothing else touches these files):

- ``header.slots``: two fixed-size slots, each ``<u8 sequence, <u8 length, the JSON header (length bytes),
  <u4 CRC-32 of the 16 + length bytes before it``. A writer (under the map's lock) writes the next header in
  place into the slot with the lower sequence (or a damaged one), one higher than the other's; a reader uses the
  valid slot with the higher sequence, so a torn write leaves the other slot, the previous commit, in use.
- ``header.json``: a stub, written once when the map is created, that lists ``commit.slots`` in ``requires`` and
  no columns, so a reader that does not know the feature refuses the map by its name.
- ``.readers-<id>``: the reader lock of one map generation (a map ``id``). Every handle of a slot map holds it
  shared while it maps the map's files; a writer replacing the map (``overwrite=True``) takes it exclusively
  without waiting: taken, the old files go at once; not taken, they stay and the new generation names its files
  ``<column>.<file_suffix>.bin`` (`Generation`). Where the lock cannot be created (read-only media) a reader reads
  without it: nothing can delete files there either.
- ``.deferred-deletions``: lines ``<id> <file>``, the files of generation ``<id>`` waiting for no handle to hold
  it; every writer of the map deletes those of the generations whose reader lock it can take exclusively.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mmap_ninja.errors import CorruptMapError, MapInUseError
from mmap_ninja.storage import locks
from mmap_ninja.storage._osfile import fsync_file, pwrite

if TYPE_CHECKING:
    from mmap_ninja.storage.format import Header

__all__ = [
    "COMMIT_ENV",
    "DEFERRED_FILE",
    "FEATURE",
    "READERS_PREFIX",
    "SLOTS_FILE",
    "SLOT_SIZE",
    "STUB",
    "Generation",
    "ReaderLock",
    "choose_protocol",
    "current_id",
    "defer_deletions",
    "hold",
    "hold_reader_lock",
    "is_our_file",
    "open_reader_lock",
    "publish",
    "read_slots",
    "reader_lock_name",
    "run_deferred_deletions",
    "write_slot",
    "write_stub",
]

FEATURE = "commit.slots"
SLOTS_FILE = "header.slots"
DEFERRED_FILE = ".deferred-deletions"
READERS_PREFIX = ".readers-"
COMMIT_ENV = "MMAP_NINJA_COMMIT"
_MAX_HEADER_BYTES = 16 << 20  # format.MAX_HEADER_BYTES (format imports this module, not the other way round)
SLOT_SIZE = _MAX_HEADER_BYTES + 4096
_PREFIX = struct.Struct("<QQ")
_CRC = struct.Struct("<I")
_BINARY = getattr(os, "O_BINARY", 0)
_FIRST_READ = 8192
_READ_ATTEMPTS = 3  # both slots torn at once needs two commits during one read: read again before giving up

#: The whole ``header.json`` of a slot map (constant: nothing in it changes when the map is replaced).
STUB = (b'{"format": "mmap_ninja", "version": [2, 0], "kind": "commit.slots", "requires": ["commit.slots"], '
        b'"attrs": {}, "metadata": {}, "columns": {}, "note": "the header of this map is in header.slots (two '
        b'checksummed slots written in place, see FORMAT.md); a reader that does not know the feature '
        b'commit.slots must refuse it"}')


def choose_protocol(commit: Optional[str], existing_slots: bool = False) -> str:
    """``"slots"`` or ``"rename"`` for a new map: ``commit`` if given, else ``$MMAP_NINJA_COMMIT``, else
    ``"slots"`` on Windows (where a file a reader holds cannot be renamed over) or where the map it replaces is
    a slot map (``existing_slots``), and ``"rename"`` elsewhere."""
    chosen = commit if commit is not None else os.environ.get(COMMIT_ENV) or None
    if chosen is None:
        return "slots" if sys.platform == "win32" or existing_slots else "rename"
    if chosen not in ("slots", "rename"):
        source = "commit=" if commit is not None else f"${COMMIT_ENV}"
        raise ValueError(f"{source} must be 'slots' (a header in two slots written in place: no file a reader holds "
                         f"is ever renamed over, truncated or deleted) or 'rename' (header.json replaced by a "
                         f"rename, readable by mmap_ninja before 1.0), got {chosen!r}")
    return chosen


def is_our_file(name: str) -> bool:
    """Whether ``name`` is one of the files this protocol keeps in a map directory."""
    return name in (SLOTS_FILE, DEFERRED_FILE) or name.startswith(READERS_PREFIX)


def _read_at(fd: int, offset: int, size: int) -> bytes:
    positional = getattr(os, "pread", None)
    if positional is not None:
        data: bytes = positional(fd, size, offset)
        return data
    os.lseek(fd, offset, os.SEEK_SET)  # our own descriptor: nobody else moves its position
    return os.read(fd, size)


def _read_slot(fd: int, index: int) -> Optional[tuple[int, bytes]]:
    """``(sequence, header bytes)`` of slot ``index``, or None when it is empty, torn or damaged."""
    base = index * SLOT_SIZE
    head = _read_at(fd, base, _FIRST_READ)  # most headers fit: one read per slot
    if len(head) < _PREFIX.size:
        return None
    sequence, length = _PREFIX.unpack_from(head)
    if sequence == 0 or length > _MAX_HEADER_BYTES:
        return None
    end = _PREFIX.size + length + _CRC.size
    if len(head) < end:
        head += _read_at(fd, base + len(head), end - len(head))
        if len(head) < end:
            return None
    (stored,) = _CRC.unpack_from(head, end - _CRC.size)
    if zlib.crc32(head[:end - _CRC.size]) != stored:
        return None
    return sequence, head[_PREFIX.size:end - _CRC.size]


def read_slots(directory: Path) -> bytes:
    """The JSON of the newest valid slot of ``directory/header.slots``; `CorruptMapError` naming the file when
    neither slot is valid."""
    path = directory / SLOTS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | _BINARY)
    except FileNotFoundError:
        raise CorruptMapError(f"{path} is missing: header.json says the map keeps its header there "
                              f"(requires {FEATURE!r})") from None
    except IsADirectoryError:
        raise CorruptMapError(f"{path} is a directory, not a header file") from None
    try:
        for _ in range(_READ_ATTEMPTS):
            found = [slot for slot in (_read_slot(fd, 0), _read_slot(fd, 1)) if slot is not None]
            if found:
                return max(found)[1]
    finally:
        os.close(fd)
    raise CorruptMapError(f"{path} is corrupt: neither of its two header slots is valid (each failed its CRC-32 "
                          f"or is empty)")


def current_id(directory: Path) -> object:
    """The ``id`` in the newest valid slot (what a reader that just took its reader lock compares with the header
    it read: a different one means the map was replaced in between)."""
    import json

    try:
        content = json.loads(read_slots(directory))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return content.get("id") if isinstance(content, dict) else None


def write_slot(directory: Path, header: bytes, *, durable: bool) -> None:
    """Write ``header`` into the slot of ``directory/header.slots`` that does not hold the newest valid header
    (creating the file for a new map), in place, and fsync it when ``durable``. Call it under the map's lock."""
    from mmap_ninja.storage._fsio import open_inside  # (storage's helpers: refuse a link in place of the file)

    if len(header) > _MAX_HEADER_BYTES:
        raise ValueError(f"a header of {len(header):,} bytes does not fit in a slot ({_MAX_HEADER_BYTES:,} at most)")
    fd = open_inside(directory / SLOTS_FILE, os.O_RDWR | os.O_CREAT | _BINARY)
    try:
        slots = [_read_slot(fd, 0), _read_slot(fd, 1)]
        sequences = [slot[0] if slot is not None else 0 for slot in slots]
        target = 0 if sequences[0] <= sequences[1] else 1  # the older or damaged one
        prefix = _PREFIX.pack(max(sequences) + 1, len(header))
        record = prefix + header + _CRC.pack(zlib.crc32(header, zlib.crc32(prefix)))
        offset, view = target * SLOT_SIZE, memoryview(record)
        while view:
            written = pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        if durable:
            fsync_file(fd)
    finally:
        os.close(fd)


def reader_lock_name(map_id: Optional[str]) -> str:
    return f"{READERS_PREFIX}{map_id or 'none'}"


def open_reader_lock(directory: Path, map_id: Optional[str], *, exclusive: bool,
                     wait: Optional[float] = 0) -> tuple[Optional[int], bool]:
    """Open the reader lock of the map generation ``map_id`` and take it (shared, or exclusive), waiting at most
    ``wait`` seconds (0: one try; None: for ever): ``(descriptor or None, taken)``. ``(None, True)`` when no lock
    can be made here (read-only media, no locking facility): then nothing can delete the files either."""
    if not locks.available():
        return None, True
    path = directory / reader_lock_name(map_id)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _BINARY, 0o644)
    except OSError:
        try:  # an existing lock file on a folder we cannot write to: a shared lock needs only reading
            fd = os.open(path, os.O_RDONLY | _BINARY)
        except OSError:
            return None, True
    try:
        taken = locks.lock(fd, shared=not exclusive, timeout=wait)
    except OSError:
        os.close(fd)
        return None, True
    if not taken:
        os.close(fd)
        return None, False
    return fd, True


def defer_deletions(directory: Path, map_id: Optional[str], names: list[str], *, durable: bool) -> None:
    """Record, under the map's lock, that the files ``names`` of the map generation ``map_id`` are to be deleted
    once no handle holds that generation's reader lock (one ``<id> <name>`` line each in ``.deferred-deletions``)."""
    if not names:
        return
    from mmap_ninja.storage._fsio import open_inside

    fd = open_inside(directory / DEFERRED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _BINARY)
    try:
        os.write(fd, "".join(f"{map_id or 'none'} {name}\n" for name in names).encode())
        if durable:
            fsync_file(fd)
    finally:
        os.close(fd)


_GENERATION = re.compile(r"[0-9a-f]{1,64}|none")
_PROTECTED = {".", "..", SLOTS_FILE, DEFERRED_FILE, "header.json", "header.json.tmp", ".lock"}


def _deferred(directory: Path) -> dict[str, list[str]]:
    try:
        raw = (directory / DEFERRED_FILE).read_bytes()
    except FileNotFoundError:
        return {}
    pending: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        map_id, _, name = line.partition(" ")
        # Only plain names of the map's own files: a damaged or hostile journal must not name anything else.
        if _GENERATION.fullmatch(map_id) and name and "/" not in name and "\\" not in name and name not in _PROTECTED:
            pending.setdefault(map_id, [])
            if name not in pending[map_id]:
                pending[map_id].append(name)
    return pending


def run_deferred_deletions(directory: Path, live_id: Optional[str], live_files: set[str]) -> None:
    """Delete, under the map's lock, the files ``.deferred-deletions`` lists for each map generation whose reader
    lock can be taken exclusively without waiting (no handle maps that generation any more), then that lock file.
    Files of the live generation (``live_id``) and the names it uses (``live_files``) are never deleted; what
    cannot be deleted yet stays listed. The journal is rewritten in place, never renamed."""
    pending = _deferred(directory)
    if not pending:
        return
    keep: list[str] = []
    for map_id, names in pending.items():
        names = [name for name in names if name not in live_files]
        if map_id == (live_id or "none") or not names:
            continue
        fd, taken = open_reader_lock(directory, map_id, exclusive=True)
        if not taken:
            keep.extend(f"{map_id} {name}" for name in names)
            continue
        lock_name = reader_lock_name(map_id)
        for name in [name for name in names if name != lock_name] + [lock_name]:
            if name == lock_name and fd is not None:
                locks.release(fd)  # closed first: Windows deletes no file that is open
                fd = None
            try:
                os.unlink(directory / name)
            except FileNotFoundError:
                pass
            except OSError:  # opened again meanwhile (Windows): a later writer tries again
                keep.append(f"{map_id} {name}")
        if fd is not None:
            locks.release(fd)
    from mmap_ninja.storage._fsio import open_inside

    fd = open_inside(directory / DEFERRED_FILE, os.O_RDWR | _BINARY)
    try:
        data = "".join(line + "\n" for line in keep).encode()
        if data:
            pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))  # writers' own journal, under the lock: no reader opens or maps it
    finally:
        os.close(fd)


class ReaderLock:
    """A handle's shared hold on the reader lock of its map generation; released by `release`, or when dropped."""

    __slots__ = ("fd",)

    def __init__(self, fd: Optional[int]):
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            locks.release(fd)

    def __del__(self) -> None:
        fd, self.fd = getattr(self, "fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def hold_reader_lock(directory: Path, map_id: Optional[str], wait: Optional[float]) -> Optional[ReaderLock]:
    """The shared reader lock of generation ``map_id`` of a slot map (a `ReaderLock` holding no descriptor where no
    lock can be made), or None if a writer replacing that generation held it exclusively for ``wait`` seconds."""
    fd, taken = open_reader_lock(directory, map_id, exclusive=False, wait=wait)
    return ReaderLock(fd) if taken else None


def write_stub(directory: Path, *, durable: bool) -> None:
    """Make ``directory/header.json`` the stub (done once, when a slot map is created over anything else)."""
    from mmap_ninja.storage.dirs import replace_file

    path = directory / "header.json"
    try:
        if path.read_bytes() == STUB:
            return
    except FileNotFoundError:
        pass
    replace_file(path, STUB, durable=durable)


def publish(directory: Path, header: bytes, *, durable: bool, created: bool) -> None:
    """Publish the encoded header of a slot map in place into a slot; when ``created``, then make ``header.json``
    the stub (once: a map created over a plain map replaces its header.json after its first slot is written)."""
    write_slot(directory, header, durable=durable)
    if created:
        write_stub(directory, durable=durable)


def hold(path: Path, header: Header, wait: Optional[float]) -> Optional[ReaderLock]:
    """A handle's hold on the files of the slot map ``header`` describes (None for a plain map), waiting at most
    ``wait`` seconds for a writer that is replacing the map (it holds the lock exclusively until the new header is
    published; the caller then reads the header again)."""
    if FEATURE not in header.requires:
        return None
    held = hold_reader_lock(path, header.id, wait)
    if held is None:
        raise MapInUseError(f"{path} is being replaced (overwrite=True) by another writer, which held it for "
                            f"{wait:g} s; open it again once that is done")
    return held


class Generation:
    """What replacing the map ``old`` (None: a new map) with a new generation involves: whether the old one's reader
    lock could be taken exclusively (no handle maps its files: they can go now) and the file suffix the new one
    must use (None: plain ``<column>.bin``; a suffix when a file of that name must stay for a reader)."""

    def __init__(self, directory: Path, old: Optional[Header], new_columns: list[str], new_id: str, new_slots: bool):
        self.directory, self.old = directory, old
        self.lock = ReaderLock(None)
        self.free = True
        if old is not None and FEATURE in old.requires:
            fd, self.free = open_reader_lock(directory, old.id, exclusive=True)
            self.lock = ReaderLock(fd)
        going = {old.file_of(name) for name in old.columns} if old is not None and self.free else set()
        kept = [name for name in new_columns if os.path.lexists(directory / f"{name}.bin")
                and f"{name}.bin" not in going]  # held by a reader of the old generation, or of an earlier one
        self.suffix: Optional[str] = new_id[:16] if kept and new_slots else None  # (a plain map replaces them)

    def retire(self, new: Header, *, durable: bool) -> None:
        """After ``new`` (a header with a new id) is published: delete the old generation's files (a plain ``new``
        map: all of them now, as the rename protocol always did), or record them in ``.deferred-deletions`` while a
        handle still maps them. A file ``new`` needs that cannot be deleted gives `MapInUseError`."""
        old = self.old
        if old is None:
            return
        names = [old.file_of(name) for name in old.columns]
        if FEATURE in old.requires:
            names.append(reader_lock_name(old.id))
            if FEATURE not in new.requires:
                names.append(SLOTS_FILE)
        needed = {new.file_of(name) for name in new.columns}
        if not self.free and FEATURE in new.requires:
            defer_deletions(self.directory, old.id, [name for name in names if name not in needed], durable=durable)
            return
        self.lock.release()
        left = []
        for name in names:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass
            except OSError as e:  # held open by a process that takes no reader lock (Windows)
                if name in needed:
                    raise MapInUseError(f"{self.directory / name} cannot be replaced: another process holds it open "
                                        f"({e.strerror}); close it and create the map again") from None
                left.append(name)
        defer_deletions(self.directory, old.id, left, durable=durable)
